"""Where supersteps really run: MPI ranks (:mod:`barrierlb.backends.mpi`), Dask
workers (:mod:`barrierlb.backends.dask`) and CUDA devices or streams
(:mod:`barrierlb.backends.cuda`).

The three backends are shells over one pure core,
:class:`barrierlb.superstep.SuperstepPlanner`: they gather what their workers
report (finished tasks, measured or modelled costs, losses), let the planner
record it in its :class:`barrierlb.ClusterState` ledger and decide where the
waiting tasks go, and deliver the new tasks to the chosen workers (the CUDA
backend launches, times and waits for its workers itself). The MPI and Dask
backends' public names agree:
``policy``, ``capacity``, ``cost``, ``timeout_s``, ``submit(task_id, spec)``
and ``stats``.

The source lives in the repository's top-level ``backends/`` directory;
``barrierlb/backends`` is a link to it, so a source checkout imports its own
backends, and an installed package carries them as ``barrierlb.backends``.
Importing this package imports none of mpi4py, distributed or cupy: each
backend module imports its dependency when a balancer is created.
"""
