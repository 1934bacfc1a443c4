"""What ``barrierlb serve`` is told: ranks, pin mode, slots, policy, timeouts."""

from __future__ import annotations

import math
from dataclasses import dataclass

#: ``--pin`` modes: how one shared endpoint learns the data-parallel rank.
PIN_MODES = ("vllm", "sglang")


#: ``barrierlb serve``'s policy: plain ``bfio`` with ``hold=0.05``
#: (:class:`barrierlb.policies.bfio.BFIO`). In the BurstGPT replay to 32 emulated ranks x 4 slots
#: its idle was 0.35 to 0.49 of ``vllm``'s over 7 runs against 0.47 to 0.69 for plain ``bfio`` (3 runs), and
#: in the simulator 0.54 against 0.61 (median over 12 request samples); on the simulator's 72-slot
#: workloads it is within 0.3% of plain ``bfio``'s throughput (docs/serving.md, 3 December 2026).
DEFAULT_POLICY = "bfio:hold=0.05"


@dataclass(frozen=True)
class ServeConfig:
    """Configuration of the proxy; validated on construction, no I/O.

    Attributes
    ----------
    ranks : tuple of str
        One base URL per data-parallel rank (external-LB vLLM, SGLang,
        llama.cpp), e.g. ``("http://127.0.0.1:8001", "http://127.0.0.1:8002")``.
        Empty when ``engine`` is given.
    engine : str or None
        One base URL serving every rank, the rank pinned per request (``pin``).
    dp_size : int
        Ranks behind ``engine`` (ignored with ``ranks``: their count).
    pin : "vllm", "sglang" or None
        ``vllm``: header ``X-data-parallel-rank``; ``sglang``: body field
        ``routed_dp_rank`` and header ``X-Data-Parallel-Rank``. ``None`` with ``ranks``.
    slots : int
        Requests each rank runs at once (the engine's max batch, llama.cpp's ``-np``).
    policy : str
        A policy spec (default :data:`DEFAULT_POLICY`, ``bfio:hold=0.05``: BF-IO
        whose online controller, :class:`barrierlb.policies.bfio.OnlineTuning`,
        sets its horizon, discount, stride and waiting bound before each decision
        from the lifetimes it observes in the slots, and which holds a request
        rather than stack it on a rank at the peak while the ranks it fits are full;
        ``bfio``, ``round-robin``, ``jsq-tokens``, ``vllm``, ``bfio:horizon=16``,
        ...) or ``auto``: the fixed BF-IO preset for the mean output length seen
        so far (:func:`barrierlb.policies.bfio.decode_preset`).
    draws : int
        Sampled futures per request for the survival predictor (0: its median).
    strata : int
        Prompt-length groups of the survival predictor (default 16): a request's
        output length is predicted from the finished requests with prompts of
        similar length (1: from all of them alike;
        :class:`barrierlb.predictors.SurvivalPredictor`).
    prompt_tokens : "tokenize" or "estimate"
        Count prompt tokens with the engine's ``/tokenize`` endpoint (falling
        back to the estimate where it has none), or estimate from the text.
    tokenize_delay_s : float
        With ``tokenize``, a placed request's ``/tokenize`` call starts once it
        has run this long (default 0: as soon as it is sent). A request that ends
        sooner costs one engine call instead of two, but decisions taken until its
        count arrives see its estimate (in the emulator replay a 0.05 s delay
        measured worse). A request left waiting by a decision is counted at once.
    tokenize_min_tokens : int
        With ``tokenize``, only prompts estimated at this many tokens or more
        are counted by the engine (default 64; 0: every prompt). Below it the
        estimate (at the characters per token learned from the counted prompts)
        is off by a few tokens, nothing next to the resident loads being
        balanced, and the call would cost the proxy as much CPU as the request.
    settle_passes : int
        Before a decision for a waiting pool, the admission loop yields to the
        event loop until this many passes in a row ended no request (default 2;
        0: decide at once), so that the requests an engine step ended together
        are all seen ended by the decision.
    host, port : str, int
        Where the proxy listens (default 127.0.0.1:8000; 0: any free port).
    connect_timeout_s, read_timeout_s, request_timeout_s : float
        Upstream timeouts: to connect, between two reads of a response, and in
        all for one request.
    probe_timeout_s, health_interval_s : float
        Health probe of each rank (``GET /health``) and how often it runs.
    health_failures : int
        Consecutive failed probes that mark a rank down (a refused connection
        while forwarding marks it down at once).
    queue_timeout_s : float
        A request still waiting for a slot after this long gets a 503.
    max_queue : int
        Requests waiting at most; beyond it new ones get a 503.
    max_wait_s : float or None
        Bounded waiting: a request queued this long is placed first at the next decision.
    """

    ranks: tuple = ()
    engine: str | None = None
    dp_size: int = 1
    pin: str | None = None
    slots: int = 8
    policy: str = DEFAULT_POLICY
    draws: int = 0
    strata: int = 16
    prompt_tokens: str = "tokenize"
    tokenize_delay_s: float = 0.0
    tokenize_min_tokens: int = 64
    settle_passes: int = 2
    host: str = "127.0.0.1"
    port: int = 8000
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 300.0
    request_timeout_s: float = 3600.0
    probe_timeout_s: float = 2.0
    health_interval_s: float = 1.0
    health_failures: int = 2
    queue_timeout_s: float = 600.0
    max_queue: int = 100_000
    max_wait_s: float | None = 30.0

    def __post_init__(self):
        ranks = tuple(self.ranks)
        object.__setattr__(self, "ranks", ranks)
        if bool(ranks) == bool(self.engine):
            raise ValueError("give either ranks (one URL per rank) or engine (one URL, ranks pinned), not "
                             + ("both" if ranks else "neither"))
        for url in ranks + ((self.engine,) if self.engine else ()):
            if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) < 8:
                raise ValueError(f"rank URL must start with http:// or https://, got {url!r}")
        if len(set(ranks)) != len(ranks):
            raise ValueError(f"ranks lists a URL twice: {list(ranks)}")
        if ranks and self.pin is not None:
            raise ValueError(f"pin={self.pin!r} needs engine=URL (one endpoint); with ranks every rank is its own URL")
        if self.engine and self.pin not in PIN_MODES:
            raise ValueError(f"engine=URL needs pin to be one of {PIN_MODES}, got {self.pin!r}")
        _positive_int("dp_size", self.dp_size)
        _positive_int("slots", self.slots)
        _positive_int("health_failures", self.health_failures)
        _positive_int("max_queue", self.max_queue)
        if not isinstance(self.draws, int) or isinstance(self.draws, bool) or self.draws < 0:
            raise ValueError(f"draws must be a non-negative integer, got {self.draws!r}")
        _positive_int("strata", self.strata)
        if not isinstance(self.policy, str) or not self.policy:
            raise ValueError(f"policy must be a policy spec or 'auto', got {self.policy!r}")
        if self.prompt_tokens not in ("tokenize", "estimate"):
            raise ValueError(f"prompt_tokens must be 'tokenize' or 'estimate', got {self.prompt_tokens!r}")
        delay = self.tokenize_delay_s
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay < math.inf:
            raise ValueError(f"tokenize_delay_s must be a non-negative number of seconds, got {delay!r}")
        if (isinstance(self.tokenize_min_tokens, bool) or not isinstance(self.tokenize_min_tokens, int)
                or self.tokenize_min_tokens < 0):
            raise ValueError(f"tokenize_min_tokens must be a non-negative integer, got {self.tokenize_min_tokens!r}")
        if isinstance(self.settle_passes, bool) or not isinstance(self.settle_passes, int) or self.settle_passes < 0:
            raise ValueError(f"settle_passes must be a non-negative integer, got {self.settle_passes!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port!r}")
        for name in ("connect_timeout_s", "read_timeout_s", "request_timeout_s", "probe_timeout_s",
                     "health_interval_s", "queue_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.max_wait_s is not None and (isinstance(self.max_wait_s, bool)
                                            or not isinstance(self.max_wait_s, (int, float))
                                            or not 0 <= self.max_wait_s < math.inf):
            raise ValueError(f"max_wait_s must be a non-negative number of seconds or None, got {self.max_wait_s!r}")

    @property
    def n_ranks(self) -> int:
        return len(self.ranks) if self.ranks else self.dp_size

    def rank_url(self, rank: int) -> str:
        """Base URL requests for ``rank`` go to."""
        return (self.ranks[rank] if self.ranks else self.engine).rstrip("/")

    def describe_rank(self, rank: int) -> str:
        """How errors name a rank: ``rank 1 (http://127.0.0.1:8002)``."""
        return f"rank {rank} ({self.rank_url(rank)})"


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
