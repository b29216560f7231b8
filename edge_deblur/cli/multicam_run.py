"""``edge-deblur stream --source A --source B ...``: several cameras in one process through one
model (``edge_deblur.runtime.multicam``); per-camera stats, a failed camera reported while the
others go on. Exit status 0 when every camera ended cleanly, 1 when some camera failed, 130/143
after Ctrl-C/SIGTERM."""
from __future__ import annotations

import logging

log = logging.getLogger("edge_deblur.stream")


def format_camera(c: dict) -> str:
    def ms(v):
        return "-" if v is None else f"{v:.1f}"

    line = (f"  {c['name']} [{c['status']}] {c['source']}: {c['frames_out']} frames, {c['fps']:.2f} fps, "
            f"dropped {c['dropped']}, latency p50 {ms(c['latency_ms_p50'])} p99 {ms(c['latency_ms_p99'])} ms")
    return line + (f" | {c['error']}" if c.get("error") else "")


def run_cameras(args, opts, kwargs, signals_cls) -> int:
    from ..runtime.multicam import MultiCamera, _check_outputs
    from ..runtime.pipeline import open_processor
    from .stream_cmd import report

    sources = list(opts.source)
    outputs = opts.output if opts.output is not None else None
    _check_outputs(outputs, len(sources))  # before anything opens
    if opts.display:
        log.warning("--display shows one window per process; with several cameras write outputs instead")
    single = opts.replace(source=None, output=None, display=False)
    with signals_cls() as sig:
        sig.check()
        processor = open_processor(args.model, args.backend, opts.rgb, **kwargs)
        try:
            sig.check()
            mc = MultiCamera(processor, sources, outputs, single)
            sig.pipeline = mc                      # stopped at once if a signal came while it opened
            info = getattr(processor, "info", {}) or {}
            log.info("stream: %d cameras -> one model %s (%s), frames of the same size batched",
                     len(sources), info.get("name") or info.get("model"), info.get("backend"))
            stats = mc.run()
        finally:
            processor.close()
    report(stats, info, sig, args.json,
           [f"{len(sources)} cameras: {stats['frames_out']} frames, {stats['fps']:.2f} fps in total, "
            f"{stats['backend_calls']} backend calls (mean batch {stats['mean_batch']})"]
           + [format_camera(c) for c in stats["cameras"]])
    if sig.received:
        return sig.exit_code
    return 1 if stats["failed"] else 0
