"""Where supersteps really run: MPI ranks, Dask workers, CUDA streams.

Backends only move data and call the core: each one gathers the workers'
loads and lookaheads into a :class:`barrierlb.ClusterState`, asks a policy for
a decision and delivers the new tasks to the chosen workers. Their optional
dependencies (mpi4py, distributed, cupy) are imported when a backend module is
imported, never by ``import barrierlb``.
"""
