"""Session fixtures: a byte-level BPE tokenizer trained here, tiny random Llama checkpoints, a BERT dir.

Everything is built from fixed seeds in temporary directories, so the suite needs no network and no
downloaded weights, and every run sees the same tokenizers and weights.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from diffbench.specs import NeedleSpec

# The suite checks CPU results (device, kernel, float32 tolerances); on a GPU machine "auto" would run
# it on CUDA in bfloat16. CUDA's own tests opt in: DIFFBENCH_TEST_CUDA=1 pytest -m cuda (the GPU check
# script, benchmarks/gpu/gpu_check.py, runs them).
if os.environ.get("DIFFBENCH_TEST_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

SPECIAL = "<|endoftext|>"
VOCAB_SIZE = 600
TRAINING_PARAGRAPHS = 400
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def training_texts() -> list[str]:
    """Generated prose (seed 0) plus the default needle, question, answer prefix and instruction."""
    from diffbench.haystack.prose import iter_prose_paragraphs

    texts = [" ".join(p) for p in itertools.islice(iter_prose_paragraphs(0), TRAINING_PARAGRAPHS)]
    needle = NeedleSpec()
    texts += [needle.needle, needle.question, needle.answer_prefix, needle.instruction] * 5
    texts += [f"The special magic number for calm-river is {n}." for n in range(1_000_000, 1_000_100)]
    return texts


def train_backend() -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` that puts <|endoftext|> (BOS) before text, as Llama does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(training_texts(), trainer)
    special_id = backend.token_to_id(SPECIAL)
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{SPECIAL} $A",
                pair=f"{SPECIAL} $A {SPECIAL} $B",
                special_tokens=[(SPECIAL, special_id)],
            ),
        ]
    )
    return backend


def save_tokenizer(directory: Path, chat: bool) -> Path:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(train_backend().to_str())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=SPECIAL, eos_token=SPECIAL, unk_token=SPECIAL, pad_token=SPECIAL
    )
    if chat:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return directory


def load_tokenizer(directory: Path) -> Any:
    """Tokenizers are only ever loaded through AutoTokenizer, as diffbench itself loads them."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


def save_tiny_llama(directory: Path, tokenizer_dir: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """DIFFBENCH_CACHE in a temporary directory (never ~/.cache) and no hub access, for subprocesses too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIFFBENCH_CACHE", str(tmp_path_factory.mktemp("diffbench-cache")))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TOKENIZERS_PARALLELISM", "false")
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        if workers > 1:  # pytest -n: share the cores between the workers instead of oversubscribing them
            import torch

            torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
        yield


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tokenizer(tmp_path_factory.mktemp("tokenizer"), chat=False)


@pytest.fixture(scope="session")
def tiny_chat_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tokenizer(tmp_path_factory.mktemp("chat-tokenizer"), chat=True)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir: Path) -> Any:
    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_chat_tokenizer(tiny_chat_tokenizer_dir: Path) -> Any:
    return load_tokenizer(tiny_chat_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_llama_chat_dir(tmp_path_factory: pytest.TempPathFactory, tiny_chat_tokenizer_dir: Path) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama-chat", tiny_chat_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir: Path) -> Any:
    """The tiny Llama in eval mode, loaded once for the in-process engine tests."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """A bidirectional encoder (BertModel) with a working tokenizer: loadable, but not a causal LM."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    directory = tmp_path_factory.mktemp("models") / "tiny-bert"
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for the tiny models: on a shared 2-core machine, two threads per process spin
    against other processes and run several times slower, while a 64-wide model gains nothing from them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def subprocess_env(isolated_environment: None) -> dict[str, str]:
    """The environment for ``python -m diffbench`` subprocesses: the session's, with one torch thread."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def finished_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A finished niah run and the command that made it (rerunning it resumes, adding nothing)."""
    from typer.testing import CliRunner

    from diffbench.cli import app

    out = tmp_path_factory.mktemp("finished") / "run"
    args = ["niah", "--model", str(tiny_llama_dir), "--lengths", "256", "--depths", "0,100"]
    args += ["--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return out, args
