"""`diffbench zoo`: list the embedded models, train one from its recipe, and write a model's card."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from diffbench.cli.console import stderr, stdout, user_errors

zoo_app = typer.Typer(
    help="The embedded tiny models (zoo:baseline, zoo:diff, zoo:dex and their seeds -s1, -s2): "
    "list, train, card.",
    no_args_is_help=True,
)


@zoo_app.command("list")
def zoo_list(
    json_output: Annotated[bool, typer.Option("--json", help="Print the list as JSON on stdout.")] = False,
) -> None:
    """The zoo's models with their size, training and measured NIAH accuracy by length."""
    with user_errors():
        from diffbench.lengths import parse_token_count
        from diffbench.report.tables import rich_table
        from diffbench.report.zoo_card import summary
        from diffbench.zoo import ZOO_MODELS, zoo_model_dir

        rows = [summary(zoo_model_dir(name), name) for name in ZOO_MODELS]
        if json_output:
            sys.stdout.write(json.dumps([asdict(row) for row in rows], indent=2) + "\n")
            return
        lengths = sorted({label for row in rows for label in row.niah}, key=parse_token_count)
        headers = ["model", "params", "MB", "tokens", "train s", *lengths]
        cells = [
            [
                f"zoo:{row.name}",
                f"{row.parameters / 1e3:.0f}K",
                f"{row.size_mb:.1f}",
                f"{row.tokens_seen / 1e6:.1f}M" if row.tokens_seen else "",
                f"{row.train_seconds:.0f}" if row.train_seconds else "",
                *[f"{row.niah[x]:.2f}" if x in row.niah else "" for x in lengths],
            ]
            for row in rows
        ]
        stdout.print(
            rich_table(
                headers,
                cells,
                "diffbench model zoo: NIAH accuracy by length (from each card)",
                "cards: diffbench/zoo/models/NAME/README.md",
            )
        )


@zoo_app.command("train")
def zoo_train(
    name: Annotated[str, typer.Argument(help="The recipe: baseline | diff | dex")],
    out: Annotated[Path, typer.Option(help="Directory to train into (rerun the same command to resume).")],
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch CPU threads (default: torch's choice; the zoo used 1).")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(help="dex only: the baseline to adapt (default: the zoo's baseline of the same seed)."),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="The recipe's seed (default: the zoo's, 0); another seed is another sample of it."),
    ] = None,
    lambda_lr_ratio: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="diff only: λ's learning rate as a share of the model's (the recipe: 1, as the paper "
            "describes no rate of its own for λ). An ablation: the model is named diff-lambda-lrR-sN.",
        ),
    ] = None,
) -> None:
    """Train a zoo model from its seeded recipe: same seed and threads, same loss curve."""
    with user_errors():
        from diffbench.errors import UsageError
        from diffbench.zoo import seed_model_name
        from diffbench.zoo.recipes import RECIPES, DexRecipe, TrainRecipe

        if name not in RECIPES:
            raise UsageError(f"unknown zoo recipe {name!r}: choose one of {', '.join(RECIPES)}")
        recipe = RECIPES[name]
        if seed is not None:  # every random choice of the recipe (tokenizer, init, data) follows it
            recipe = replace(recipe, seed=seed)
        model_name = seed_model_name(name, recipe.seed)
        if source is not None and not isinstance(recipe, DexRecipe):
            raise UsageError("--source only applies to 'dex' (baseline and diff train from scratch)")
        if lambda_lr_ratio is not None and lambda_lr_ratio != 1.0:
            if not isinstance(recipe, TrainRecipe) or recipe.variant != "diff":
                raise UsageError("--lambda-lr-ratio only applies to 'diff' (the only recipe with λ)")
            recipe = replace(recipe, lambda_lr_ratio=lambda_lr_ratio)
            model_name = seed_model_name(f"{name}-lambda-lr{lambda_lr_ratio:g}", recipe.seed)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        outcome: Any
        if isinstance(recipe, DexRecipe):
            from diffbench.training.zoo_dex import train_dex

            baseline = source or f"zoo:{seed_model_name('baseline', recipe.seed)}"  # the same seed's
            outcome = train_dex(recipe, out, baseline, _progress_hook(stderr, f"zoo train {model_name}"))
        else:
            from diffbench.training.zoo_train import train

            with _progress(stderr, f"zoo train {model_name}") as hook:
                outcome = train(recipe, out, hook)
        from diffbench.report.zoo_card import write_card

        card = write_card(out, model_name)
        stdout.print(
            f"zoo:{model_name}: {outcome.tokens:,} tokens in {outcome.seconds:.0f} s; "
            f"checkpoint {out}; card {card}",
            markup=False,
            highlight=False,
        )


def _progress_hook(console: Any, label: str) -> Any:
    """A plain event printer for the DEX stage (dex adapt draws its own numbers)."""

    from diffbench.events import Evaluated, Event, Status

    def hook(event: Event) -> None:
        if isinstance(event, Status):
            console.print(f"{label}: {event.text}", markup=False, highlight=False)
        elif isinstance(event, Evaluated):
            loss = f"held-out loss {event.when} {event.loss:.4f}"
            console.print(f"{label}: {loss}", markup=False, highlight=False)

    return hook


class _progress:
    """A rich progress bar fed by zoo.train's events: step, loss, answer loss, held-out accuracy."""

    def __init__(self, console: Any, label: str) -> None:
        from diffbench.progress import progress_bar

        self.bar = progress_bar(console)
        self.task = self.bar.add_task(label, total=None, info="")

    def __enter__(self) -> Any:
        self.bar.__enter__()
        return self.on_event

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]

    def on_event(self, event: Any) -> None:
        from diffbench.events import Planned, StepDone

        if isinstance(event, Planned):
            self.bar.update(self.task, total=event.total, completed=event.done)
        elif isinstance(event, StepDone):
            row = event.metrics
            info = f"loss {event.loss:.3f} answer {row['answer_loss']:.3f}"
            self.bar.update(self.task, completed=event.step, info=info)
            if "eval_accuracy" in row:
                self.bar.console.print(
                    f"step {event.step}: held-out accuracy {row['eval_accuracy']:.2f} "
                    f"(with a position skip {row['eval_far_accuracy']:.2f})",
                    highlight=False,
                )


@zoo_app.command("card")
def zoo_card(
    name: Annotated[str, typer.Argument(help="A zoo model: baseline, diff-s1, dex-s2, ...")],
    directory: Annotated[
        Path | None, typer.Option(help="The model directory (default: the shipped one).")
    ] = None,
    run: Annotated[
        Path | None, typer.Option(help="A niah run holding this model: its grid goes in the card.")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="The model's name in that run (default: zoo-NAME).")
    ] = None,
) -> None:
    """Rewrite a zoo model's README.md card, adding the NIAH grid of a run when given."""
    with user_errors():
        from diffbench.report.zoo_card import attach_grid, write_card
        from diffbench.zoo import canonical_zoo_name, zoo_model_dir

        target = directory or zoo_model_dir(name)
        name = canonical_zoo_name(name)
        if run is not None:
            attach_grid(target, run, model_name or f"zoo-{name}")
        stdout.print(f"card: {write_card(target, name)}", markup=False, highlight=False)
