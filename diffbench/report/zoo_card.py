"""Model cards for the zoo: recipe, tokens seen, loss curve and the model's NIAH grid, from its files.

A card is rebuilt from what the directory holds (recipe.json, train_log.jsonl or dex training facts,
and the niah section a measured run added to card.json), so it can never disagree with the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffbench.checkpoints import read_log
from diffbench.lengths import parse_token_count
from diffbench.report.tables import markdown_table, number_text
from diffbench.store import atomic_write_text
from diffbench.zoo import seed_model_name, zoo_root
from diffbench.zoo.recipes import ZOO_SEEDS

CARD_DATA = "card.json"
CARD_FILE = "README.md"
LOSS_PLOT = "loss.png"
GRID_PLOT = "niah_grid.png"


@dataclass(frozen=True)
class ZooSummary:
    """One row of `diffbench zoo list`."""

    name: str
    variant: str
    parameters: int
    size_mb: float
    tokens_seen: int | None
    train_seconds: float | None
    niah: dict[str, float]  # length label → accuracy over depths


def parameter_count(directory: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(directory / "model.safetensors"), framework="pt") as handle:
        for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            shape = handle.get_slice(name).get_shape()
            count = 1
            for dim in shape:
                count *= dim
            total += count
    return total


def directory_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 1e6


def read_card_data(directory: Path) -> dict[str, Any]:
    path = directory / CARD_DATA
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_card_data(directory: Path, data: dict[str, Any]) -> None:
    atomic_write_text(directory / CARD_DATA, json.dumps(data, indent=2, sort_keys=True) + "\n")


def plot_loss(directory: Path) -> Path | None:
    """loss.png: training loss (all tokens and answer tokens) and held-out answer accuracy by step."""
    rows = [r for r in read_log(directory / "train_log.jsonl") if "loss" in r]
    if not rows:
        return None
    from diffbench.figures import pyplot

    plt = pyplot()
    figure, (losses, accuracy) = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = [r["step"] for r in rows]
    losses.plot(steps, [r.get("lm_loss", r["loss"]) for r in rows], label="all tokens", linewidth=0.8)
    if "answer_loss" in rows[0]:
        losses.plot(steps, [r["answer_loss"] for r in rows], label="answer tokens", linewidth=0.8)
    losses.set_xlabel("step")
    losses.set_ylabel("loss (nats/token)")
    losses.legend()
    evals = [r for r in rows if "eval_accuracy" in r]
    if evals:
        accuracy.plot(
            [r["step"] for r in evals], [r["eval_accuracy"] for r in evals], "o-", label="contiguous"
        )
        accuracy.plot(
            [r["step"] for r in evals], [r["eval_far_accuracy"] for r in evals], "s-", label="position skip"
        )
        accuracy.set_ylim(-0.02, 1.02)
        accuracy.legend()
    accuracy.set_xlabel("step")
    accuracy.set_ylabel("held-out answer accuracy")
    figure.tight_layout()
    path = directory / LOSS_PLOT
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def summary(directory: Path, name: str) -> ZooSummary:
    """What `zoo list` shows for one model directory."""
    from diffbench.attention.dex import is_dex_checkpoint

    recipe = json.loads((directory / "recipe.json").read_text(encoding="utf-8"))
    result = recipe.get("result", {})
    variant = "dex" if is_dex_checkpoint(str(directory)) else recipe["recipe"].get("variant", "baseline")
    return ZooSummary(
        name=name,
        variant=variant,
        parameters=parameter_count(directory),
        size_mb=round(directory_mb(directory), 2),
        tokens_seen=result.get("tokens_seen"),
        train_seconds=result.get("seconds"),
        niah=read_card_data(directory).get("niah", {}).get("accuracy_by_length", {}),
    )


def write_card(directory: Path, name: str) -> Path:
    """README.md of a zoo model from its recipe, log and measured grid."""
    recipe = json.loads((directory / "recipe.json").read_text(encoding="utf-8"))
    facts = summary(directory, name)
    loss_plot = plot_loss(directory)
    niah = read_card_data(directory).get("niah")
    settings = recipe["recipe"]
    command = f"diffbench zoo train {settings['name']}" + (
        f" --seed {settings['seed']}" if settings["seed"] else ""
    )
    lines = [
        f"# zoo:{name}",
        "",
        f"A tiny {facts.variant} model trained by diffbench (`{command}`), shipped so every "
        "command has an embedded default. It is a benchmark fixture, not a language model: it learned one "
        "task (find the magic number for a key in generated prose) and nothing else.",
        "",
        f"- parameters: {facts.parameters:,}; directory size {facts.size_mb} MB",
        f"- tokens seen: {facts.tokens_seen:,}" if facts.tokens_seen else "- tokens seen: see recipe",
        f"- training time: {facts.train_seconds:.0f} s" if facts.train_seconds else "",
        "",
        "## Recipe",
        "",
        "```json",
        json.dumps(recipe["recipe"], indent=2),
        "```",
        "",
        "Result of the recorded run:",
        "",
        "```json",
        json.dumps(recipe.get("result", {}), indent=2),
        "```",
    ]
    if loss_plot is not None:
        lines += ["", "## Loss curve", "", f"![loss]({LOSS_PLOT})"]
    lines += ["", "## NIAH grid", ""]
    if niah:
        lines += [
            f"`{niah['command']}` (diffbench {niah['diffbench_version']}); accuracy by length and depth:",
            "",
            niah["table_markdown"],
            "",
            f"![grid]({GRID_PLOT})" if (directory / GRID_PLOT).exists() else "",
        ]
    else:
        lines.append("Not measured yet: `diffbench zoo card` adds it from a niah run.")
    if directory.parent == zoo_root():
        lines += ["", *seed_study(settings["name"])]
    notes = read_card_data(directory).get("notes", [])
    if notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in notes]]
    path = directory / CARD_FILE
    atomic_write_text(path, "\n".join(line for line in lines if line is not None) + "\n")
    return path


def seed_study(variant: str) -> list[str]:
    """The card's section on every shipped seed of ``variant``: held-out metrics on the training
    distribution (what the recipe is judged on), Diff's λ per layer, and the measured NIAH reach."""
    rows = []
    lengths: list[str] = []
    for seed in ZOO_SEEDS:
        directory = zoo_root() / seed_model_name(variant, seed)
        if not (directory / "recipe.json").is_file():
            continue
        result = json.loads((directory / "recipe.json").read_text(encoding="utf-8")).get("result", {})
        niah = read_card_data(directory).get("niah", {}).get("accuracy_by_length", {})
        lengths += [label for label in niah if label not in lengths]
        rows.append((seed, directory, result, niah))
    lengths.sort(key=parse_token_count)
    trained = variant != "dex"
    headers = ["seed", "model"]
    headers += ["held-out acc.", "with skip", "answer loss"] if trained else ["held-out loss before → after"]
    headers += ["λ per layer"] if variant == "diff" else []
    headers += [f"NIAH {label}" for label in lengths]
    cells = []
    for seed, directory, result, niah in rows:
        row = [str(seed), f"zoo:{directory.name}"]
        if trained:
            row += [
                number_text(result.get("eval_accuracy"), "{:.2f}"),
                number_text(result.get("eval_far_accuracy"), "{:.2f}"),
                number_text(result.get("eval_answer_loss"), "{:.3f}"),
            ]
        else:
            row.append(
                f"{number_text(result.get('held_out_loss_before'), '{:.3f}')} → "
                f"{number_text(result.get('held_out_loss_after'), '{:.3f}')}"
            )
        if variant == "diff":
            row.append(", ".join(f"{value:.2f}" for value in diff_lambdas(directory)))
        row += [number_text(niah.get(label), "{:.2f}") for label in lengths]
        cells.append(row)
    metric = (
        "held-out answer accuracy and loss on 32 rows of the last phase's own distribution (contiguous "
        "positions, and with a position skip), after the last step"
        if trained
        else "the adaptation's held-out loss"
    )
    return [
        "## Seed study",
        "",
        f"Every variant ships training seeds {', '.join(map(str, ZOO_SEEDS))}, registered before seeds 1 "
        "and 2 were trained. The recipe is judged on the training distribution, never on the benchmark grid: "
        f"{metric}. NIAH: accuracy by length over depths, from the card's run.",
        "",
        markdown_table(headers, cells).rstrip("\n"),
    ] + (
        [
            "",
            "λ = exp(λq1·λk1) − exp(λq2·λk2) + λ_init per layer: above 1 a layer's differential map "
            "A1 − λ·A2 has negative total mass.",
        ]
        if variant == "diff"
        else []
    )


def diff_lambdas(directory: Path) -> list[float]:
    """Each layer's λ of a DiffLlama checkpoint, computed from its weights."""
    from transformers import AutoModelForCausalLM

    from diffbench.attention.reference import v1_lambdas

    return v1_lambdas(AutoModelForCausalLM.from_pretrained(str(directory)))


def attach_grid(directory: Path, run: Path, model: str) -> None:
    """Put ``model``'s depth × length grid from niah run ``run`` into the card (table, heatmap, by length)."""
    from diffbench.errors import UsageError
    from diffbench.lengths import format_length
    from diffbench.report.heatmap import plot_heatmap
    from diffbench.report.summary import cell_summary, grid, records_frame
    from diffbench.report.tables import markdown_table
    from diffbench.store import RECORDS, iter_record_lines, read_manifest

    manifest = read_manifest(run)
    frame = records_frame(list(iter_record_lines(run / RECORDS)))
    if frame.empty or model not in set(frame["model"]):
        raise UsageError(f"run {str(run)!r} has no records of model {model!r}; pass --model-name")
    table = grid(cell_summary(frame[frame["model"] == model]), model)
    labels = [format_length(int(length)) for length in table.columns]
    cells = [[f"{depth:g}%", *[f"{value:.2f}" for value in row]] for depth, row in table.iterrows()]
    by_length = {
        label: round(float(table[length].mean()), 4)
        for label, length in zip(labels, table.columns, strict=True)
    }
    plot_heatmap(table, f"zoo:{directory.name} — NIAH accuracy", directory / "niah_grid")
    for extra in directory.glob("niah_grid.svg"):
        extra.unlink()  # the PNG is enough for a card; keeps the package small
    data = read_card_data(directory)
    data["niah"] = {
        "command": " ".join(["diffbench", *manifest.command[1:]]) if manifest.command else "diffbench niah",
        "diffbench_version": manifest.versions.get("diffbench"),
        "run_id": manifest.run_id,
        "samples_per_cell": int(
            frame[frame["model"] == model].groupby(["target_length", "depth"]).size().min()
        ),
        "accuracy_by_length": by_length,
        "table_markdown": markdown_table(["depth", *labels], cells),
    }
    write_card_data(directory, data)
