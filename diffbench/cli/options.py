"""The options several commands share, as Typer annotations, and their defaults.

Nearly a leaf: it imports only the zoo's catalogue (which imports no command), so every command module
can use it without a cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from diffbench.zoo import DEFAULT_MODELS as ZOO_DEFAULT_MODELS
from diffbench.zoo import FAMILY_MODELS

DEFAULT_MODELS = list(ZOO_DEFAULT_MODELS)  # the embedded zoo: seed 0 of every variant
NIAH_MODELS = list(FAMILY_MODELS)  # niah's default: every seed of every variant, one family per variant
NIAH_LENGTHS = "1k-64k"
NIAH_DEPTHS = "3"


ModelsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        help="Checkpoint directory, .gguf file, hub id, 'smollm2' or zoo:NAME. Repeat to compare "
        "(default: zoo:baseline, zoo:diff and zoo:dex; for niah each with its seeds -s1 and -s2).",
    ),
]
LengthsOption = Annotated[
    str, typer.Option(help="Context lengths: '8k-64k' (doubling), '8k:64k:8k' (steps), '4096,12k'.")
]
DepthsOption = Annotated[
    str, typer.Option(help="A count ('5' → 0,25,50,75,100%) or percentages ('0,50,100').")
]
SamplesOption = Annotated[int, typer.Option(min=1, help="Samples per depth × length cell.")]
SeedOption = Annotated[int, typer.Option(help="Seed of every random choice (recorded in the manifest).")]
HaystackOption = Annotated[
    str,
    typer.Option(help="'prose' (generated), 'noise' (repeated filler), 'essays' (Paul Graham), or a path."),
]
NeedleOption = Annotated[
    str | None, typer.Option(help="A custom needle sentence (with --question, --answer).")
]
QuestionOption = Annotated[str | None, typer.Option(help="The question asked about a custom needle.")]
AnswerOption = Annotated[str | None, typer.Option(help="The expected answer; must occur in the needle.")]
AnswerPrefixOption = Annotated[
    str | None, typer.Option(help="Text the answer turn starts with, e.g. 'The answer is'.")
]
NeedleStyleOption = Annotated[
    str,
    typer.Option(
        help="magic (RULER's magic numbers) | literal (a character at a landmark, asked in the needle's "
        "words) | nonliteral (asked by the landmark's city: no word shared with the needle, as NoLiMa).",
    ),
]
DistractorOption = Annotated[
    bool,
    typer.Option(
        "--distractor",
        help="With --needle-style literal/nonliteral: also hide a sentence that names the question's key "
        "and no character (a literal match that answers nothing, as NoLiMa's distractors).",
    ),
]
AnswerBudgetOption = Annotated[
    int, typer.Option(min=1, help="Tokens reserved for the answer; the prompt is length minus this.")
]
ChatTemplateOption = Annotated[str, typer.Option(help="auto | on | off")]
RopeScalingOption = Annotated[
    str, typer.Option(help="none | dynamic | yarn: stretch RoPE to run past the model's window.")
]
ResultsDirOption = Annotated[Path, typer.Option(help="Where default run directories go.")]
DeviceOption = Annotated[str, typer.Option(help="auto | cpu | cuda")]
DtypeOption = Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")]
AttnOption = Annotated[
    bool,
    typer.Option(
        "--attn",
        help="Then record where attention goes at the answer rows of the same samples (RUN/attention; "
        "as `diffbench attn`); on halluc also Lookback Lens's ratio over each generated answer.",
    ),
]
