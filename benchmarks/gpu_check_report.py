"""The GPU check's figures (``benchmarks/gpu_check.py``'s JSON) as a short text report: what the device tool shows
last, and what goes into ``benchmarks/RESULTS.md`` by hand with the date and the card."""

from __future__ import annotations

from typing import Any


def _facts(f: dict[str, Any]) -> list[str]:
    card = f.get("device_name") or "no CUDA device"
    lines = [
        f"card: {card} · capability {f.get('capability', '-')} · {f.get('memory_gib', '-')} GiB · "
        f"nvidia-smi: {f.get('nvidia_smi', '-')}",
        f"torch {f.get('torch')} (CUDA {f.get('torch_cuda', '-')}, cuDNN {f.get('cudnn', '-')}) · triton "
        f"{f.get('triton')} · cupy {f.get('cupy-cuda13x')} · onnxruntime {f.get('onnxruntime')} · torchcodec "
        f"{f.get('torchcodec')} · python {f.get('python')} · {f.get('cpu_count')} CPUs",
    ]
    if "ffmpeg_libraries" in f:
        lines.append(f"FFmpeg libraries: {f['ffmpeg_libraries']}")
    if "torchcodec_error" in f:
        lines.append(f"torchcodec does not load: {f['torchcodec_error']}")
    return lines


def _models(m: dict[str, Any]) -> list[str]:
    lines = [f"models ({m.get('frames')}; {m.get('faces_in_sample')} faces in the sample):",
             "| what | device | precision | batch | backend | ms/frame or ms/face | CPU ms / this |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    rows = m.get("rows", [])
    cpu = {r["what"]: r.get("ms_per_frame", r.get("ms_per_face")) for r in rows if r.get("device") == "cpu"}
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['what']} | {r['device']} | failed: {r['failed'][:80]} | | | | |")
            continue
        ms = r.get("ms_per_frame", r.get("ms_per_face"))
        ratio = f"{cpu[r['what']] / ms:.1f}x" if cpu.get(r["what"]) and ms else "-"
        unit = "frame" if "ms_per_frame" in r else "face"
        lines.append(
            f"| {r['what']} | {r['device']} | {r['precision']} | {r['batch']} | {r['backend']} | {ms:.3f} /{unit} | "
            f"{ratio} |"
        )
    return lines


def report_lines(results: dict[str, Any]) -> list[str]:
    """Every step's figures, one block each; failed or skipped steps say why."""
    lines = ["GPU check" + (" (dry run on the CPU)" if results.get("dry_run") else "")]
    for name in ("facts", "cuda_tests", "models", "kernels", "compile", "end_to_end"):
        step = results.get(name)
        if step is None:
            continue
        if "failed" in step or "skipped" in step:
            lines.append(f"{name}: {'FAILED ' + step['failed'] if 'failed' in step else 'skipped: ' + step['skipped']}")
            continue
        if name == "facts":
            lines += _facts(step)
        elif name == "cuda_tests":
            lines.append(
                f"cuda tests: {step.get('tests', 0)} run, {step.get('failures', 0)} failed, {step.get('errors', 0)} "
                f"errors, {step.get('skips', 0)} skipped (exit {step.get('exit')})"
            )
            lines += [f"  not passed: {t}" for t in step.get("not_passed", [])]
        elif name == "models":
            lines += _models(step)
        elif name == "kernels":
            lines += [
                f"kernel {r['kernel']}: triton {r['triton_ms']:.3f} ms, torch {r['torch_ms']:.3f} ms, "
                f"{r['speedup']:.2f}x, equal {r['equal']}"
                for r in step["rows"]
            ]
        elif name == "compile":
            lines.append(
                f"torch.compile detector fp16 b64: eager {step['eager_ms']:.3f} ms, compiled "
                f"{step['compiled_ms']:.3f} ms ({step['speedup']:.2f}x), first call {step['first_call_s']} s, fell "
                f"back {step['fell_back_to_eager']}"
            )
        elif name == "end_to_end":
            r = step["result"]
            lines.append(
                f"bench on {r['engine']['device']}: {r['frames']} sampled frames of {step['videos']} videos; engine "
                f"{r['engine']['ms_per_sampled_frame']:.2f} ms/frame, decode-only fraction {r['decode_only_fraction']}"
            )
            lines += r.get("end_to_end", {}).get("lines", [])
    if results.get("failures"):
        lines.append(f"failed steps: {', '.join(results['failures'])}")
    lines.append(f"elapsed: {results.get('elapsed_s')} s")
    return lines
