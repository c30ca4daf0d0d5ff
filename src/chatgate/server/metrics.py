"""``GET /metrics``: the local engines' and the gateway's state in Prometheus' text exposition format."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response

from chatgate.backends.local.metrics import EngineStats, Histogram
from chatgate.gateway.gateway import Gateway
from chatgate.gateway.stats import GatewayStats
from chatgate.runtime import Runtime

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_GAUGES: dict[str, tuple[str, Callable[[EngineStats], float]]] = {
    "chatgate_requests_running": ("Sequences the local engine is generating.", lambda s: s.running),
    "chatgate_requests_waiting": ("Sequences waiting for a slot of the local engine.", lambda s: s.waiting),
    "chatgate_kv_cache_cells_used": ("KV cache cells in use (running and cached prefixes).", lambda s: s.kv_cells_used),
    "chatgate_kv_cache_cells_total": ("KV cache cells allocated.", lambda s: s.kv_cells_total),
    "chatgate_kv_cache_usage_ratio": (
        "Share of the KV cache in use.",
        lambda s: s.kv_cells_used / s.kv_cells_total if s.kv_cells_total else 0.0,
    ),
    "chatgate_engine_threads": ("CPU threads the last decode step used.", lambda s: s.threads),
    "chatgate_generation_tokens_per_second": (
        "Tokens generated per second over the last 10 seconds.",
        lambda s: s.tokens_per_second(),
    ),
}
_COUNTERS: dict[str, tuple[str, Callable[[EngineStats], float]]] = {
    "chatgate_generated_tokens_total": ("Tokens sampled by the local engine.", lambda s: s.tokens_generated),
    "chatgate_prompt_tokens_total": (
        "Prompt tokens prefilled (not served from cache).",
        lambda s: s.prompt_tokens_processed,
    ),
    "chatgate_prefix_cache_hit_tokens_total": (
        "Prompt tokens whose KV cells were reused from the prefix cache.",
        lambda s: s.prompt_tokens_reused,
    ),
    "chatgate_requests_completed_total": ("Requests the local engine finished.", lambda s: s.jobs_done),
    "chatgate_preemptions_total": ("Sequences preempted because the KV pool was full.", lambda s: s.preemptions),
    "chatgate_decode_steps_total": ("Batched decode steps run.", lambda s: s.decode_steps),
    "chatgate_engine_thread_switches_total": (
        "Times the engine changed its width (the CPU became shared, or free again).",
        lambda s: s.thread_switches,
    ),
    "chatgate_engine_thread_probes_total": (
        "Decode steps run at the other width to see whether it is faster now.",
        lambda s: s.thread_probes,
    ),
}
_HISTOGRAMS: dict[str, tuple[str, Callable[[EngineStats], Histogram]]] = {
    "chatgate_time_to_first_token_seconds": (
        "Time from a request's arrival at the engine to its first token.",
        lambda s: s.ttft_seconds,
    ),
    "chatgate_time_per_output_token_seconds": (
        "Time between consecutive tokens of a sequence.",
        lambda s: s.time_per_token_seconds,
    ),
}


def render(engines: Iterable[tuple[str, EngineStats]]) -> str:
    pairs = list(engines)
    lines: list[str] = []
    for kind, table in (("gauge", _GAUGES), ("counter", _COUNTERS)):
        for name, (help_text, read) in table.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines += [f'{name}{{model="{_label(model)}"}} {_num(read(stats))}' for model, stats in pairs]
    for name, (help_text, read_hist) in _HISTOGRAMS.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for model, stats in pairs:
            lines += _histogram(name, _label(model), read_hist(stats))
    return "\n".join(lines) + "\n"


def _histogram(name: str, model: str, hist: Histogram) -> list[str]:
    out = [f'{name}_bucket{{model="{model}",le="{bound}"}} {count}' for bound, count in hist.cumulative()]
    out.append(f'{name}_sum{{model="{model}"}} {_num(hist.total)}')
    out.append(f'{name}_count{{model="{model}"}} {hist.count}')
    return out


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render_gateway(gateway: Gateway) -> str:
    """The gateway's own numbers: its requests, tokens, costs and cache hits (from the same exchanges as the
    ledger), rate-limit checks counted in process while Redis was away, the ``provider/model`` routes cached."""
    limiter, router = gateway.limiter, gateway.router
    lines = [
        *render_stats(gateway.stats),
        "# HELP chatgate_rate_limit_fallbacks_total Rate-limit checks counted in process because Redis was away.",
        "# TYPE chatgate_rate_limit_fallbacks_total counter",
        f"chatgate_rate_limit_fallbacks_total {limiter.fallbacks}",
        "# HELP chatgate_direct_routes_cached provider/model routes kept built (at most direct_routes).",
        "# TYPE chatgate_direct_routes_cached gauge",
        f"chatgate_direct_routes_cached {router.direct_routes_cached}",
    ]
    return "\n".join(lines) + "\n"


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    body = render((b.model_id, b.engine.stats) for b in runtime.local)
    body += render_gateway(runtime.gateway)
    return Response(body, media_type=CONTENT_TYPE)


_STATS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("chatgate_gateway_requests_total", "Requests finished, per endpoint and HTTP status.", "requests",
     ("endpoint", "status")),
    ("chatgate_gateway_errors_total", "Requests that ended in an error, per endpoint and error type.", "errors",
     ("endpoint", "type")),
    ("chatgate_gateway_prompt_tokens_total", "Prompt tokens answered, per endpoint and model.", "prompt_tokens",
     ("endpoint", "model")),
    ("chatgate_gateway_completion_tokens_total", "Completion tokens answered, per endpoint and model.",
     "completion_tokens", ("endpoint", "model")),
    ("chatgate_gateway_cost_micro_usd_total", "Micro-USD charged, per endpoint and model.", "cost",
     ("endpoint", "model")),
    ("chatgate_gateway_cache_hits_total", "Answers served from the response cache.", "cache_hits", ("endpoint",)),
    ("chatgate_gateway_upstream_attempts_total", "Upstream attempts (retries and fallbacks included).",
     "upstream_attempts", ("endpoint",)),
    ("chatgate_gateway_disconnects_total", "Requests whose client went away before the answer ended.",
     "disconnects", ("endpoint",)),
)  # fmt: skip


def render_stats(stats: GatewayStats) -> list[str]:
    lines: list[str] = []
    for name, help_text, attribute, labels in _STATS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        for key, value in sorted(getattr(stats, attribute).items(), key=lambda kv: str(kv[0])):
            values = key if isinstance(key, tuple) else (key,)
            pairs = ",".join(f'{label}="{_label(str(v))}"' for label, v in zip(labels, values, strict=True))
            lines.append(f"{name}{{{pairs}}} {value}")
    return lines
