"""``barrierlb serve``: the command line of the proxy (argparse only; aiohttp is imported to run)."""

from __future__ import annotations

import argparse
import re
import sys

from barrierlb.serving._loop import EVENT_LOOPS, uvloop_module
from barrierlb.serving._loop import name as loop_name
from barrierlb.serving._loop import run as run_loop
from barrierlb.serving.config import PIN_MODES, ServeConfig

DESCRIPTION = """\
An OpenAI-compatible router in front of data-parallel engine ranks. It keeps
the waiting requests itself, lets each rank run at most --slots of them, and
whenever slots free up places all waiting requests together with BF-IO
(balance the predicted resident tokens of the ranks over the next steps).

Two llama-server ranks (llama.cpp):
  llama-server -m MODEL.gguf --host 127.0.0.1 --port 8001 -np 4 -c 4096 &
  llama-server -m MODEL.gguf --host 127.0.0.1 --port 8002 -np 4 -c 4096 &
  barrierlb serve --ranks http://127.0.0.1:8001,http://127.0.0.1:8002 --slots 4 --port 8000

vLLM with internal data parallelism, one endpoint, ranks pinned by header:
  barrierlb serve --engine http://127.0.0.1:8001 --dp-size 4 --pin vllm --slots 256

Clients then use http://127.0.0.1:8000/v1 as their OpenAI base URL. See docs/serving.md."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``barrierlb serve``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = DESCRIPTION
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--ranks", metavar="URL,URL,...",
                       help="one base URL per data-parallel rank (llama.cpp, external-LB vLLM, SGLang)")
    where.add_argument("--engine", metavar="URL", help="one base URL for all ranks, the rank pinned per request "
                                                       "(needs --dp-size and --pin)")
    parser.add_argument("--dp-size", type=int, default=None, help="ranks behind --engine")
    parser.add_argument("--pin", choices=PIN_MODES, default=None,
                        help="vllm: header X-data-parallel-rank; sglang: body field routed_dp_rank and header "
                             "X-Data-Parallel-Rank")
    parser.add_argument("--slots", type=int, required=True,
                        help="requests each rank runs at once (the engine's max batch; llama-server's -np)")
    parser.add_argument("--policy", default=ServeConfig.policy,
                        help=f"a policy spec (default {ServeConfig.policy}: BF-IO tuning its horizon, discount, "
                             "stride and waiting bound online from the lifetimes it observes, holding a request "
                             "rather than stacking it on a rank at the peak while the ranks it fits are full): "
                             "bfio, bfio:horizon=16, jsq-tokens, vllm, round-robin, ... (barrierlb policies lists "
                             "them), or auto: the fixed BF-IO preset for the mean output length seen so far")
    parser.add_argument("--draws", type=int, default=0,
                        help="sampled futures per request for the survival predictor (default 0: its median)")
    parser.add_argument("--strata", type=int, default=ServeConfig.strata,
                        help="prompt-length groups of the survival predictor: output lengths are learned per "
                             "group of similar prompts (default %(default)s; 1: one distribution for all)")
    parser.add_argument("--prompt-tokens", choices=("tokenize", "estimate"), default="tokenize",
                        help="count prompt tokens with the engine's /tokenize (default; falls back to the "
                             "estimate) or estimate them from the text (4 characters a token)")
    parser.add_argument("--tokenize-delay-s", type=float, default=ServeConfig.tokenize_delay_s,
                        help="a placed request's /tokenize call starts once it has run this long (default "
                             "%(default)s: when it is sent); shorter requests then cost one engine call, not two, "
                             "but until the count arrives decisions see the estimate")
    parser.add_argument("--tokenize-min-tokens", type=int, default=ServeConfig.tokenize_min_tokens,
                        help="only prompts estimated at this many tokens or more go to /tokenize (default "
                             "%(default)s; 0: every prompt); shorter ones keep their estimate")
    parser.add_argument("--settle-passes", type=int, default=ServeConfig.settle_passes,
                        help="before placing a waiting pool, yield to the event loop until this many passes "
                             "in a row ended no request (default %(default)s; 0: decide at once)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument("--connect-timeout-s", type=float, default=ServeConfig.connect_timeout_s)
    parser.add_argument("--read-timeout-s", type=float, default=ServeConfig.read_timeout_s,
                        help="longest silence of a rank inside one response (default %(default)s)")
    parser.add_argument("--request-timeout-s", type=float, default=ServeConfig.request_timeout_s)
    parser.add_argument("--health-interval-s", type=float, default=ServeConfig.health_interval_s)
    parser.add_argument("--queue-timeout-s", type=float, default=ServeConfig.queue_timeout_s,
                        help="a request waiting this long for a slot gets a 503 (default %(default)s)")
    parser.add_argument("--max-wait-s", type=float, default=ServeConfig.max_wait_s,
                        help="bounded waiting: a request queued this long is placed first (default %(default)s)")
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default="auto",
                        help="auto (default): uvloop when installed (part of the serve extra), else asyncio's")


def config_from_args(args) -> ServeConfig:
    ranks = tuple(url.strip() for url in args.ranks.split(",") if url.strip()) if args.ranks else ()
    if args.ranks is not None and not ranks:
        raise ValueError("--ranks lists no URL")
    if args.engine and args.dp_size is None:
        raise ValueError("--engine needs --dp-size N (the number of data-parallel ranks behind it)")
    if args.ranks and args.dp_size is not None and args.dp_size != len(ranks):
        raise ValueError(f"--dp-size {args.dp_size} disagrees with the {len(ranks)} URLs of --ranks")
    if args.ranks and args.pin:
        raise ValueError("--pin is for --engine; with --ranks every rank is its own URL")
    return ServeConfig(ranks=ranks, engine=args.engine, dp_size=args.dp_size or 1, pin=args.pin, slots=args.slots,
                       policy=args.policy, draws=args.draws, strata=args.strata,
                       prompt_tokens=args.prompt_tokens,
                       tokenize_delay_s=args.tokenize_delay_s,
                       tokenize_min_tokens=args.tokenize_min_tokens, settle_passes=args.settle_passes,
                       host=args.host,
                       port=args.port, connect_timeout_s=args.connect_timeout_s, read_timeout_s=args.read_timeout_s,
                       request_timeout_s=args.request_timeout_s, health_interval_s=args.health_interval_s,
                       queue_timeout_s=args.queue_timeout_s,
                       max_wait_s=None if args.max_wait_s is not None and args.max_wait_s < 0 else args.max_wait_s)


def run(args) -> int:
    """Run the proxy until interrupted; user mistakes print one line and return 2."""
    try:
        config = config_from_args(args)
        if config.policy != "auto":
            from barrierlb.policies import make_policy

            make_policy(config.policy)
        from barrierlb.serving.proxy import serve_forever
        uvloop_module(args.event_loop)
    except (ValueError, TypeError, ImportError) as error:
        # ServeConfig names its fields; on the command line they are options.
        message = re.sub(r"^([a-z_]+) must", lambda m: f"--{m.group(1).replace('_', '-')} must", str(error))
        print(f"barrierlb serve: error: {message}", file=sys.stderr)
        return 2

    def ready(url):
        print(f"barrierlb serve: listening on {url} ({config.n_ranks} ranks x {config.slots} slots, "
              f"policy {config.policy}, {loop_name()} loop)", flush=True)

    try:
        run_loop(serve_forever(config, ready=ready), args.event_loop)
    except OSError as error:
        print(f"barrierlb serve: error: cannot listen on {config.host}:{config.port}: {error.strerror or error}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="barrierlb serve")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
