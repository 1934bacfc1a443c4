"""Accelerator and model presets: the numbers the absolute power model and the roofline step time use.

Every figure below carries its source. Peak FLOP/s are *dense* (vendor datasheets
print the 2:4-sparsity figure first, twice the dense one; the dense figure is used
here because decode GEMMs and attention are dense). Idle power is not on any
datasheet and depends on clocks and the serving stack: every preset assumes the
paper's idle/max ratio of 1/4 (100 W of 400 W, arXiv 2601.17855's evaluation setup),
which a user can override (``dataclasses.replace(preset, idle_w=...)``).

>>> accelerator_preset("h200").hbm_bytes_s
4800000000000.0
>>> round(model_preset("deepseek-v3").kv_bytes_per_token)
70272
"""

from __future__ import annotations

from dataclasses import dataclass

from barrierlb._validate import check_int, check_real

_TERA = 1e12

_IDLE_NOTE = "idle_w: assumed max_w / 4, the paper's 100 W / 400 W ratio (no vendor publishes idle draw)"


@dataclass(frozen=True)
class Accelerator:
    """One accelerator: peaks for the roofline, board powers for the power model.

    Attributes
    ----------
    name : str
    peak_bf16_flops : float
        Dense BF16 tensor throughput (FLOP/s).
    peak_fp8_flops : float or None
        Dense FP8 tensor throughput (FLOP/s); ``None`` where the chip has no FP8
        tensor cores (FP8 weights then compute at the BF16 rate, dequantized).
    hbm_bytes_s : float
        Peak HBM bandwidth (bytes/s).
    hbm_bytes : float
        HBM capacity (bytes); reported, not enforced (the simulator does not model memory).
    idle_w, max_w : float
        Board power idle and at full load (W).
    source : str
    """

    name: str
    peak_bf16_flops: float
    peak_fp8_flops: float | None
    hbm_bytes_s: float
    hbm_bytes: float
    idle_w: float
    max_w: float
    source: str = ""

    def __post_init__(self):
        check_real("peak_bf16_flops", self.peak_bf16_flops, minimum=1.0)
        if self.peak_fp8_flops is not None:
            check_real("peak_fp8_flops", self.peak_fp8_flops, minimum=1.0)
        check_real("hbm_bytes_s", self.hbm_bytes_s, minimum=1.0)
        check_real("hbm_bytes", self.hbm_bytes, minimum=0.0)
        check_real("idle_w", self.idle_w, minimum=0.0)
        check_real("max_w", self.max_w, minimum=self.idle_w)

    def peak_flops(self, bytes_per_value: float) -> float:
        """Dense tensor FLOP/s for operands of ``bytes_per_value`` bytes (1: FP8, 2: BF16)."""
        if bytes_per_value <= 1 and self.peak_fp8_flops is not None:
            return self.peak_fp8_flops
        return self.peak_bf16_flops


def _accelerator(name, bf16_tflops, fp8_tflops, hbm_tb_s, hbm_gb, max_w, source) -> Accelerator:
    return Accelerator(name=name, peak_bf16_flops=bf16_tflops * _TERA,
                       peak_fp8_flops=None if fp8_tflops is None else fp8_tflops * _TERA,
                       hbm_bytes_s=hbm_tb_s * _TERA, hbm_bytes=hbm_gb * 1e9, idle_w=max_w / 4, max_w=max_w,
                       source=f"{source}; {_IDLE_NOTE}")


#: Accelerator presets. ``paper`` is the power of the paper's evaluation (100 W idle,
#: 400 W max per worker) on an A100's peaks, the chip those powers belong to.
ACCELERATOR_PRESETS: dict[str, Accelerator] = {
    "paper": _accelerator(
        "paper", 312.0, None, 2.039, 80, 400.0,
        "powers: Chen et al. 2026 evaluation setup (arXiv 2601.17855), 100 W idle / 400 W max; peaks: the A100 "
        "SXM4 80GB datasheet's"),
    "a100": _accelerator(
        "a100", 312.0, None, 2.039, 80, 400.0,
        "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB): BF16 312 TFLOPS dense (624 with sparsity), no FP8, "
        "HBM2e 2,039 GB/s, 80 GB, max TDP 400 W"),
    "h100": _accelerator(
        "h100", 989.5, 1979.0, 3.35, 80, 700.0,
        "NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 1,979 / FP8 3,958 TFLOPS with sparsity, half that "
        "dense; HBM3 3.35 TB/s, 80 GB, max TDP up to 700 W"),
    "h200": _accelerator(
        "h200", 989.5, 1979.0, 4.8, 141, 700.0,
        "NVIDIA H200 Tensor Core GPU datasheet (SXM): BF16 1,979 / FP8 3,958 TFLOPS with sparsity, half that "
        "dense; HBM3e 4.8 TB/s, 141 GB, max TDP up to 700 W"),
    "b200": _accelerator(
        "b200", 2250.0, 4500.0, 8.0, 180, 1000.0,
        "NVIDIA HGX B200 datasheet, 8-GPU totals divided by 8: FP16/BF16 36 PFLOPS and FP8 72 PFLOPS with "
        "sparsity -> 2.25 / 4.5 PFLOPS dense per GPU; HBM3e 64 TB/s -> 8 TB/s, 1,440 GB -> 180 GB; "
        "1,000 W per GPU"),
    "mi300x": _accelerator(
        "mi300x", 1307.4, 2614.9, 5.3, 192, 750.0,
        "AMD Instinct MI300X data sheet (OAM): peak BF16 1,307.4 TFLOPS and FP8 2,614.9 TFLOPS dense "
        "(twice with sparsity), HBM3 5.3 TB/s, 192 GB, 750 W typical board power"),
}


@dataclass(frozen=True)
class ModelSpec:
    """A decoder model as the roofline sees it, plus the deployment of one data-parallel worker.

    Attributes
    ----------
    name : str
    total_params : float
        All weights, including every routed expert.
    active_params : float
        Weights one token passes through (shared part plus its ``experts_per_token`` experts).
    routed_expert_params : float
        Weights of all routed experts together (0 for a dense model).
    routed_experts : int
        Routed experts per MoE layer (0 for a dense model).
    experts_per_token : int
        Experts each token is routed to (0 for a dense model).
    n_layers : int
    kv_bytes_per_token : float
        KV-cache bytes one resident token occupies over all layers (read once per step).
    attention_flops_per_token : float
        Attention FLOPs one decoded token spends per resident token of its context, all layers.
    weight_bytes_per_param : float
        Storage of a weight (1: FP8, 2: BF16); GEMMs run at the matching peak.
    attention_bytes_per_value : float
        Precision of the attention math (2: BF16).
    tensor_parallel : int
        Accelerators per data-parallel worker; flops, bytes and power split evenly over them.
    source : str
    """

    name: str
    total_params: float
    active_params: float
    routed_expert_params: float
    routed_experts: int
    experts_per_token: int
    n_layers: int
    kv_bytes_per_token: float
    attention_flops_per_token: float
    weight_bytes_per_param: float
    attention_bytes_per_value: float = 2.0
    tensor_parallel: int = 1
    source: str = ""

    def __post_init__(self):
        check_real("total_params", self.total_params, minimum=1.0)
        check_real("active_params", self.active_params, minimum=1.0, maximum=self.total_params)
        check_real("routed_expert_params", self.routed_expert_params, minimum=0.0, maximum=self.total_params)
        check_int("routed_experts", self.routed_experts, minimum=0)
        check_int("experts_per_token", self.experts_per_token, minimum=0)
        if (self.routed_experts == 0) != (self.routed_expert_params == 0) or \
                self.experts_per_token > self.routed_experts or \
                (self.routed_experts > 0 and self.experts_per_token == 0):
            raise ValueError(f"model {self.name!r}: routed_experts={self.routed_experts}, experts_per_token="
                             f"{self.experts_per_token} and routed_expert_params={self.routed_expert_params} "
                             f"do not describe one dense or one MoE model")
        if self.active_params < self.shared_params:
            raise ValueError(f"model {self.name!r}: active_params {self.active_params} is below the shared "
                             f"(non-expert) params {self.shared_params}")
        check_int("n_layers", self.n_layers, minimum=1)
        check_real("kv_bytes_per_token", self.kv_bytes_per_token, minimum=0.0)
        check_real("attention_flops_per_token", self.attention_flops_per_token, minimum=0.0)
        check_real("weight_bytes_per_param", self.weight_bytes_per_param, minimum=0.125)
        check_real("attention_bytes_per_value", self.attention_bytes_per_value, minimum=0.125)
        check_int("tensor_parallel", self.tensor_parallel, minimum=1)

    @property
    def is_moe(self) -> bool:
        return self.routed_experts > 0

    @property
    def shared_params(self) -> float:
        """Weights every worker holds itself: attention, dense layers, shared experts, embeddings."""
        return self.total_params - self.routed_expert_params

    @property
    def active_routed_params(self) -> float:
        """Routed-expert weights one token passes through."""
        return self.active_params - self.shared_params


# DeepSeek-V3 (arXiv 2412.19437 and the config.json of deepseek-ai/DeepSeek-V3): 671B total, 37B
# activated, 61 layers (3 dense, 58 MoE), hidden 7168, 128 heads, MLA with kv_lora_rank 512 and
# qk_rope_head_dim 64, 256 routed experts of intermediate size 2048 plus one shared, 8 per token, FP8 weights.
_DSV3_ROUTED = 58 * 256 * 3 * 7168 * 2048          # 653.9e9: gate, up and down projections of each expert
_DSV3_KV = 61 * (512 + 64) * 2                      # BF16 compressed latent + RoPE key per layer: 70,272 B
_DSV3_ATTENTION = 61 * 2 * 128 * ((512 + 64) + 512)  # absorbed MLA decode: scores over 576, values over 512 dims
# Llama 3 70B (Meta's model card and the config.json of meta-llama/Meta-Llama-3-70B): 70.6B params,
# 80 layers, 64 query heads, 8 KV heads (GQA), head_dim 128, BF16.
_LLAMA70_KV = 80 * 2 * 8 * 128 * 2                  # K and V of 8 KV heads per layer, BF16: 327,680 B
_LLAMA70_ATTENTION = 80 * 2 * 64 * 128 * 2          # QK^T and AV of 64 query heads per layer

#: Model presets ("-like": the shapes that set FLOPs and bytes, not the exact checkpoints).
MODEL_PRESETS: dict[str, ModelSpec] = {
    "deepseek-v3": ModelSpec(
        name="deepseek-v3", total_params=671e9, active_params=37e9, routed_expert_params=float(_DSV3_ROUTED),
        routed_experts=256, experts_per_token=8, n_layers=61, kv_bytes_per_token=float(_DSV3_KV),
        attention_flops_per_token=float(_DSV3_ATTENTION), weight_bytes_per_param=1.0, tensor_parallel=1,
        source="DeepSeek-V3 technical report (arXiv 2412.19437) and its config.json: 671B total / 37B active, "
               "61 layers, MLA latent 512 + RoPE 64 (BF16 cache: 70,272 B/token), 128 heads, 256 routed experts "
               "(8 per token) of 3 x 7168 x 2048 in 58 MoE layers, FP8 weights. Deployment: one accelerator per "
               "data-parallel attention rank, experts spread over the ranks (expert parallelism), as in "
               "DeepSeek's and SGLang's decode deployments"),
    "llama-3-70b": ModelSpec(
        name="llama-3-70b", total_params=70.6e9, active_params=70.6e9, routed_expert_params=0.0,
        routed_experts=0, experts_per_token=0, n_layers=80, kv_bytes_per_token=float(_LLAMA70_KV),
        attention_flops_per_token=float(_LLAMA70_ATTENTION), weight_bytes_per_param=2.0, tensor_parallel=4,
        source="Meta Llama 3 model card and config.json of Meta-Llama-3-70B: 70.6B params, 80 layers, 64 "
               "query / 8 KV heads of 128 (GQA; BF16 cache: 327,680 B/token), BF16 weights. Deployment: each "
               "data-parallel worker is a tensor-parallel group of 4 accelerators (141 GB of weights do not fit "
               "one 80 GB device)"),
}


def _lookup(presets: dict, kind: str, name):
    if not isinstance(name, str):
        raise TypeError(f"{kind} must be a preset name (str), got {name!r} ({type(name).__name__})")
    try:
        return presets[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(presets)}") from None


def accelerator_preset(name: str) -> Accelerator:
    """A named :class:`Accelerator`; ``ValueError`` lists the names on a miss."""
    return _lookup(ACCELERATOR_PRESETS, "accelerator", name)


def model_preset(name: str) -> ModelSpec:
    """A named :class:`ModelSpec`; ``ValueError`` lists the names on a miss."""
    return _lookup(MODEL_PRESETS, "model", name)
