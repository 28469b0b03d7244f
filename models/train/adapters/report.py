"""Markdown tables from results.json (evaluate.ts) and bench.json (test/bench/adapters.ts).
python3 report.py [results.json] [bench.json]"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
res = json.load(open(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results.json")))
bench_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "bench.json")
rows = {r["label"]: r for r in res["results"]}
concepts = ["diamond", "heart", "ring"]


def shape(label, c):
    r = rows.get(label)
    v = r and r["concept"].get(c)
    return v["shape"] if v else None


def f(v):
    return "-" if v is None else f"{v:.3f}"


print(f"Concept accuracy: fraction of held-out concept prompts ({res['perConcept']} per concept, seeds never trained on) whose "
      f"concept object is classified as the concept shape (six-way template fit); {res['steps']} LCM steps, CFG {res['cfg']} "
      f"{res['guidance']}, adapter weight {res['weight']}.\n")
print("| concept | base UNet | orthogonal alone | orthogonal merged (3) | kept | plain LoRA alone | plain LoRA merged (3) | kept |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for c in concepts:
    oa, om = shape(f"{c} alone (orthogonal)", c), shape("orthogonal merged (3)", c)
    la, lm = shape(f"{c} alone (plain LoRA)", c), shape("plain LoRA merged (3)", c)
    keep = lambda a, m: "-" if not a or m is None else f"{m / a:.2f}"
    print(f"| {c} | {f(shape('base UNet', c))} | {f(oa)} | {f(om)} | {keep(oa, om)} | {f(la)} | {f(lm)} | {keep(la, lm)} |")
mean = lambda label, suffix: (lambda xs: None if None in xs else sum(xs) / len(xs))([shape(label if suffix is None else f"{c} alone ({suffix})", c) for c in concepts])
oa, om, la, lm = mean(None, "orthogonal"), mean("orthogonal merged (3)", None), mean(None, "plain LoRA"), mean("plain LoRA merged (3)", None)
print(f"| mean | {f(mean('base UNet', None))} | {f(oa)} | {f(om)} | {f(om / oa) if oa else '-'} | {f(la)} | {f(lm)} | {f(lm / la) if la else '-'} |")
print(f"\nBase prompts (the pack's held-out captions, no concept, {res['baseImages']} images, the pack's evaluator):\n")
print("| UNet | background | object colour | shape | position | mean | vs base |")
print("| --- | --- | --- | --- | --- | --- | --- |")
base_mean = None
for label in ["base UNet", "orthogonal merged (3)", "plain LoRA merged (3)"]:
    r = rows.get(label)
    if not r or not r.get("base"):
        continue
    b = r["base"]
    m = (b["background"] + b["objectColor"] + b["shape"] + b["position"]) / 4
    base_mean = m if base_mean is None else base_mean
    print(f"| {label} | {b['background']:.3f} | {b['objectColor']:.3f} | {b['shape']:.3f} | {b['position']:.3f} | {m:.3f} | {100 * (m - base_mean):+.1f} pts |")
print("\nMerge (main thread, yielding) and session build (worker thread) per combination, ms, during the evaluation:\n")
print("| UNet | merge | build | warnings |")
print("| --- | --- | --- | --- |")
for r in res["results"]:
    print(f"| {r['label']} | {r['mergeMs']:.0f} | {r['buildMs']:.0f} | {len(r['warnings'])} |")
if os.path.exists(bench_path):
    b = json.load(open(bench_path))
    print(f"\nBenchmark (`test/bench/adapters.ts`, adapters {', '.join(b['adapters'])}): cold merge {b['mergeMs']:.0f} ms + "
          f"build on a worker {b['buildMs']:.0f} ms; the same build on the main thread {b['mainThreadBuildMs']:.0f} ms.\n")
    print("| stream | frame interval | time per frame before | max gap from the swap request | in intervals | frames while building | request -> ready | per frame after |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in ["saturated", "paced"]:
        s = b[name]
        label = "back to back (CPU saturated)" if name == "saturated" else f"camera clock {1000 / s['paceMs']:.0f} fps"
        print(f"| {label} | {s['frameIntervalMs']:.1f} ms | {s['processingMs']:.1f} ms | {s['maxGapMs']:.1f} ms | {s['maxGapIntervals']:.2f} | "
              f"{s['framesWhileBuilding']} | {s['swapReadyMs']:.0f} ms | {s['mergedProcessingMs']:.1f} ms |")
names = ["diamond", "heart", "ring", "diamond-lora", "heart-lora", "ring-lora"]
logs = {n: json.load(open(os.path.join(HERE, "logs", f"{n}.json"))) for n in names if os.path.exists(os.path.join(HERE, "logs", f"{n}.json"))}
if logs:
    print("\nTraining (fixed batch of 64 training scenes, same noise and timesteps, concept eps-MSE before -> after; adapter response "
          "||dW h||^2 / ||W h||^2, mean over the 14 layers, on the trigger's tokens, on distractor captions and on the empty prompt; "
          "share of the learned token's text-state energy in the adapter's own basis block and in the other two blocks):\n")
    print("| adapter | method | steps | seconds | eps-MSE before -> after | response: trigger | distractor captions | empty prompt | token energy: own block | other blocks |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, s in logs.items():
        r = s.get("response", {})
        method = "orthogonal" if s["method"] == "orthogonal" else "plain LoRA"
        print(f"| {n} | {method} | {s['train_steps']} | {s['train_seconds']} | {s['fixed_batch_eps_mse_before']:.3f} -> {s['fixed_batch_eps_mse_after']:.3f} | "
              f"{r.get('trigger_tokens', float('nan')):.3f} | {r.get('distractor_captions', float('nan')):.3f} | {r.get('unconditional', float('nan')):.3f} | "
              + (f"{r['trigger_energy_in_own_block']:.3f} | {r['trigger_energy_in_other_blocks']:.3f} |" if s["method"] == "orthogonal" else "- | - |"))
