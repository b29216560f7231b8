"""edge-deblur stream --camera N | --source URI [--output URI] [--display] [--model M]
[--backend B] [--profile NAME|PATH] [--json] [--stats-every N] [--max-frames N] ...

Deblurs a live source (camera, V4L2, CSI, RTSP, GStreamer) or a file in real time through the
streaming pipeline. Ctrl-C or SIGTERM stops capture, finishes the frames in flight and
finalizes the output (a second Ctrl-C discards the frames in flight); the stats are printed
either way and the exit status is 130 (SIGINT) or 143 (SIGTERM) after an interruption.
"""
from __future__ import annotations

import json
import logging
import sys

from .signals import Signals as _Signals

log = logging.getLogger("edge_deblur.stream")


def add_arguments(p):
    from ..io.options import StreamOptions

    StreamOptions.add_arguments(p)
    p.add_argument("--model", "-m", default=None, help="ONNX model, model folder, checkpoint or engine (default: the bundled model)")
    p.add_argument("--backend", default=None, help="onnxruntime | torch | tensorrt | torch-cuda (default: from the file)")
    p.add_argument("--device", default=None, help="cpu | cuda | tensorrt (default: from the backend)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores this process may use)")
    p.add_argument("--tile", type=int, default=None, help="tile size for large frames (default: whole frame)")
    p.add_argument("--overlap", type=int, default=None,
                   help="with --tile: overlap between tiles, blended without seams (default 128)")
    p.add_argument("--scene-cut", type=float, default=None, metavar="T",
                   help="recurrent models: reset the state when consecutive frames' colour histograms differ by "
                        "more than T (0..1, default 0.16; 0 turns it off)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the final stats")
    p.add_argument("--max-bad-frames", type=int, default=30, metavar="N",
                   help="model outputs with NaN/Inf are replaced by the input frame; fail after N in a row (default 30)")
    p.add_argument("--profile", default=None, metavar="NAME|PATH",
                   help="runtime profile (configs/runtime/NAME.yaml, or a YAML path), as for `edge-deblur deblur`: its "
                        "stream section (source, width/height, fps, queue_size, drop), pipeline section (slots, "
                        "gpu_preprocess, cuda_graphs, tile, overlap, scene_cut), model, backend, device and, for "
                        "tensorrt, its engine build options; flags given here win")
    # unset unless given, so that a profile's value can fill them (run() puts the defaults back)
    p.set_defaults(**{k: None for k in STREAM_FLAG_DEFAULTS})


# the stream flags with a default that a profile's stream: section may replace (None in the parser:
# a value there was given on the command line)
STREAM_FLAG_DEFAULTS = {"queue_size": 2, "drop": "auto"}


def apply_profile(args, prof):
    """A copy of ``args`` with a runtime profile's values where the command line left them unset
    (flags win): the ``stream:`` section's width/height (as a pair), fps, queue_size and drop,
    the ``pipeline:`` section's slots, gpu_preprocess and cuda_graphs (deblur_cmd.pipeline_options),
    and the model, backend, device, tile and overlap (deblur_cmd.model_settings). Without a
    profile: the flags' defaults."""
    import copy

    from .deblur_cmd import model_settings, pipeline_options

    args = copy.copy(args)
    if prof is not None:
        sec = prof.stream
        if getattr(args, "width", None) is None and getattr(args, "height", None) is None:
            args.width, args.height = sec.width, sec.height
        if getattr(args, "fps", None) is None:
            args.fps = sec.fps
        for k in STREAM_FLAG_DEFAULTS:
            if k == "drop" and getattr(args, "live", None) is False:
                continue  # --no-live: never drop (drop auto on a source that is not live), whatever the profile drops
            if getattr(args, k, None) is None:
                setattr(args, k, getattr(sec, k))
        for k, v in pipeline_options(prof, getattr(args, "slots", None)).items():
            setattr(args, k, v)
        args.model, args.backend, args.device, args.tile, args.overlap = model_settings(args, prof)
    for k, v in STREAM_FLAG_DEFAULTS.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return args


def run(args) -> int:
    from ..errors import EdgeDeblurError
    from ..io.options import StreamOptions
    from ..runtime.pipeline import format_stats, open_processor, run_stream
    from .deblur_cmd import drop_idle_profile_slots, engine_options, load_profile, scene_cut_options

    prof = load_profile(args)
    # as given on the command line (a profile's overlap needs a tile too; its slots are no --slots)
    given_overlap, given_slots = getattr(args, "overlap", None), getattr(args, "slots", None)
    given_drop = getattr(args, "drop", None)
    args = apply_profile(args, prof)
    opts = StreamOptions.from_args(args)
    if opts.source is None and prof is not None and prof.stream.source is not None:
        opts = opts.replace(source=prof.stream.source).validate()  # no --camera/--source: the profile's
    if opts.source is None:
        from ..errors import InputError

        raise InputError("give a source: --camera N or --source URI (a file, folder, rtsp://..., /dev/videoN, csi://N)")

    def on_stats(s):
        print(f"[stream] {format_stats(s)}", file=sys.stderr, flush=True)

    kwargs = {}
    if args.device is not None:
        kwargs["device"] = args.device
    if args.threads is not None:  # 0 or less is refused by the backend with the way out, not ignored
        kwargs["threads"] = args.threads
    if given_overlap is not None and args.tile is None:
        from ..errors import InputError

        raise InputError(f"--overlap {given_overlap} only applies with --tile; give --tile N, or drop --overlap")
    if args.tile is not None:
        from .deblur_cmd import check_tile_overlap

        overlap = 128 if args.overlap is None else args.overlap
        check_tile_overlap(args.tile, overlap)  # before any source or model opens (Deblurrer.open: at its stride)
        kwargs["tile"], kwargs["overlap"] = args.tile, overlap
    kwargs.update(scene_cut_options(args, prof))
    kwargs["max_bad_frames"] = args.max_bad_frames
    kwargs.update(engine_options(prof, args.backend))  # tensorrt: the profile's engine build options
    if isinstance(opts.source, list):
        from .multicam_run import run_cameras

        if given_slots is not None:
            log.info("--slots %d: several sources run batched through one model call at a time; --slots applies "
                     "to one source", given_slots)

        return run_cameras(args, opts, kwargs, _Signals)

    with _Signals() as sig:
        def hook(pipe):
            sig.pipeline = pipe
            pipe.announce_schedule = True  # "schedule slots: N frames in flight" / "schedule sync: ..."

        # the source and the sinks open first (fast failures), then the model
        from ..io.sinks import check_frames_fit, open_sink
        from ..io.sources import open_source

        sig.check()
        source = open_source(opts.source, opts)
        if prof is not None and given_drop is None and opts.drop not in ("auto", "never") and not source.live:
            # a profile's drop policy is for its live cameras: a recorded file replayed with it keeps every
            # frame (as --drop auto does) unless --drop or --live says otherwise
            log.info("profile %s drops frames (%s) from live sources only; %s is a file: no drops (--drop %s or "
                     "--live to drop)", prof.name, opts.drop, source.uri, opts.drop)
            opts = opts.replace(drop="never").validate()
        sinks, processor = [], None
        try:
            sig.check()
            specs = [opts.output] if opts.output is not None else []
            if opts.display:
                specs.append("display://")
            for spec in specs or ["null://"]:
                sinks.append(open_sink(spec, opts, fps=source.fps))
            check_frames_fit(sinks, source, opts)  # many frames into one image file: refused before any is written
            sig.check()
            processor = open_processor(args.model, args.backend, opts.rgb, **kwargs)
            sig.check()      # a signal while it opened; one after this stops the pipeline as it starts
        except BaseException:
            _close_all(processor, sinks, source)
            raise
        try:
            info = getattr(processor, "info", {}) or {}
            if prof is not None and given_slots is None:
                opts = drop_idle_profile_slots(processor, opts)  # the profile's slots: not a --slots to explain
            # the schedule is logged by the pipeline once it is built (announce_schedule): a slot
            # pipeline that cannot be made falls back to one frame at a time
            log.info("stream: %s -> %s | model %s (%s) | %s", source.uri, ", ".join(s.uri for s in sinks),
                     info.get("name") or info.get("model"), info.get("backend"), drop_note(opts.drop, source.live))
            failure = None
            try:
                stats = run_stream(opts, processor, on_stats=on_stats if opts.stats_every else None,
                                   pipeline_hook=hook, source=source, sinks=sinks)
            except EdgeDeblurError as e:
                # the stream ran and failed (source lost, disk full, bad model output): report what
                # it did, then the error; the CLI's exit status is the error's
                if sig.pipeline is None or sig.pipeline._result is None:
                    raise
                stats, failure = sig.pipeline._result, e
        finally:
            close = getattr(processor, "close", None)
            if close is not None:
                close()
    report(stats, info, sig, args.json, [
        format_stats(stats),
        f"fps {stats['fps']:.2f} over {stats['frames_out']} frames ({stats['elapsed_s']:.1f} s)"
        + (f"; {stats['dropped']} dropped" if stats["dropped"] else "")])
    if failure is not None:
        raise failure
    return sig.exit_code


def _close_all(processor, sinks, source):
    """Close what opening made, each even if closing another raised (or a second signal landed)."""
    try:
        close = getattr(processor, "close", None)
        if close is not None:
            close()
    finally:
        try:
            for s in sinks:
                try:
                    s.close()
                except Exception as e:  # noqa: BLE001 - the error being raised is the one to report
                    log.warning("closing %s: %s", getattr(s, "uri", s), e)
        finally:
            source.close()


def drop_note(drop: str, live: bool) -> str:
    """What the stream does when inference falls behind, as the pipeline resolves ``--drop``
    (auto: the oldest frame for live sources, none for files; a profile's or the flag's policy
    otherwise)."""
    if drop == "auto":
        drop = "oldest" if live else "never"
    kind = "live" if live else "file"
    return f"{kind}: no drops" if drop == "never" else f"{kind}: drops the {drop} frame when behind"


def report(stats: dict, info: dict, sig, as_json: bool, lines: list) -> None:
    """The end of a stream (one camera or several): the model, backend and whether a signal
    stopped it go into ``stats``; then one JSON line, or ``lines`` for a person."""
    stats["model"] = info.get("name") or info.get("model")
    stats["backend"] = info.get("backend")
    stats["interrupted"] = bool(sig.received)
    if as_json:
        print(json.dumps(stats), flush=True)
    else:
        for line in lines:
            print(line, flush=True)
