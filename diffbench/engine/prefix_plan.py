"""Order a grid's prompts so that prompts sharing a prefix share its prefill.

Every NIAH prompt is template + haystack[:insertion] + needle + haystack[insertion:] + question. All
depths of a length, all samples of a cell and all lengths read the same haystack from its start, so
the tokens before each needle are a prefix of one long "trunk". Prefilling the trunk once, in
ascending order of insertion points, and computing only each prompt's remainder (its "branch") on
top of the cached trunk gives the same logits as independent prefills, with strictly less work.

The plan trusts nothing: a prompt joins a trunk only if its tokens before the fork point equal the
trunk's, so prompts from different haystacks (or another task's layout) simply get their own trunk.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Branch:
    """One prompt: its position in the caller's list and how many leading tokens it takes from the trunk."""

    position: int
    fork: int


@dataclass(frozen=True)
class Trunk:
    """Token ids shared by its branches, which run in ascending order of fork point."""

    tokens: list[int]
    branches: list[Branch]


def plan_trunks(prompts: list[list[int]], fork_hints: list[int], share: bool = True) -> list[Trunk]:
    """Group prompts into trunks; without sharing every prompt forks at 0 from one empty trunk.

    ``fork_hints[i]`` is where prompt i stops matching the common text (the needle's first token for
    NIAH). A fork is capped below the prompt's length: the last prompt token must run in the branch,
    since it produces the first answer logit.
    """
    forks = [max(0, min(hint, len(prompt) - 1)) for prompt, hint in zip(prompts, fork_hints, strict=True)]
    if not share:  # one empty trunk: every prompt runs from an empty cache
        return [Trunk(tokens=[], branches=[Branch(position, 0) for position in range(len(prompts))])]
    trunk_tokens: list[list[int]] = []
    members: list[list[Branch]] = []
    for position in sorted(range(len(prompts)), key=lambda i: (-forks[i], i)):
        fork, prompt = forks[position], prompts[position]
        for tokens, branches in zip(trunk_tokens, members, strict=True):
            if tokens[:fork] == prompt[:fork]:
                branches.append(Branch(position, fork))
                break
        else:
            trunk_tokens.append(prompt[:fork])
            members.append([Branch(position, fork)])
    return [
        Trunk(tokens=tokens, branches=sorted(branches, key=lambda b: (b.fork, b.position)))
        for tokens, branches in zip(trunk_tokens, members, strict=True)
    ]
