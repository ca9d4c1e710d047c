"""A bad-input sweep (#15): several hundred bad, extreme or odd inputs, each run as a user would, classified.

    .venv/bin/python tools/badinput.py                 # every case; writes results/badinput.json
    .venv/bin/python tools/badinput.py --only schema   # one group (schema, cli, sweep, resume, collect, env, score)
    .venv/bin/python tools/badinput.py --subprocess    # each case as `timeout 60 python -m ...` (slower, same classes)

Inputs: every key of the command line's schema (walked from ``experiments.config.CLIConfig``, so new keys are
covered) overridden with out-of-range, wrong-type, extreme and non-finite values, on a small world and in a context
where the key applies; unknown keys and malformed overrides; sweeps with a bad value in job N; damaged
``metrics.json`` and other damage before a resume; ``experiments.collect`` on odd directories; gymnasium env
keyword arguments; ``sim.score`` inputs.

Each case runs in its own process (by default a child forked from a parent that has imported the packages once,
which then executes the command line's module exactly as ``python -m`` would; ``--subprocess`` runs the real
command) under ``nice -n 10``, at most two at a time, killed after 60 s. Classes:

- ``clean``: refused with rmsim's message naming the key (exit 2), or a run that fails with its reason (exit 1,
  ``rmsim: run failed``/``failed``), or a library call raising ``ConfigError``/``ValueError``/``TypeError``
  naming the argument;
- ``traceback``: an uncaught exception (a Python traceback, hydra's ``HYDRA_FULL_ERROR`` hint, a job's
  ``failed.txt`` with a traceback, or death by a signal);
- ``silent``: exit 0 where an error was due (an ignored or garbled input), or with garbage (a non-finite or missing
  core metric, a missing warning for a setting that cannot apply);
- ``hang``: killed at the timeout;
- ``unclear``: refused, but without naming the key or not with rmsim's exit code;
- ``ok``: a legal input that ran and gave finite results (``refused_legal`` flags a legal one that was refused).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"
TIMEOUT = 60.0
CORE = ("optimal_return", "oracle_return", "reference_return", "proxy_return", "kl_to_reference", "gap")


@dataclass
class Case:
    """One input. ``kind``: ``run`` (``python -m experiments.run`` argv), ``collect`` (``experiments.collect`` argv),
    ``py`` (a Python snippet). ``expect``: ``error``, ``ok``, ``either`` (a clean refusal or a finite result),
    ``warn`` (runs, and warns naming ``key``), ``long`` (legal; a timeout is not a fault)."""

    id: str
    group: str
    kind: str
    args: list[str] | str
    expect: str
    key: str | None = None
    prepare: str | None = None  # a named preparation of the work directory
    check: str | None = None  # a named extra verification on success
    timeout: float = TIMEOUT


@dataclass
class Outcome:
    id: str
    group: str
    cls: str
    rc: int | None
    seconds: float
    message: str
    note: str = ""
    refused_legal: bool = False
    args: list[str] | str = field(default_factory=list)


# ------------------------------------------------------------------------------------------------------ the cases
def _leaves(schema: type, prefix: str = ""):
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            yield from _leaves(t, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, t


#: Settings that make a key apply (a key tested where it would be ignored tests nothing).
CONTEXT = {
    "corruption.sparsity.chunk": ["corruption.sparsity.mode=chunk"],
    "corruption.misspec.exploit_length": ["corruption.misspec.exploit=1"],
    "corruption.noise.df": ["corruption.noise.sigma=1"],
    "corruption.noise.alpha": ["corruption.noise.sigma=1"],
    "corruption.noise.dist": ["corruption.noise.sigma=1"],
    "corruption.noise.mode": ["corruption.noise.sigma=1"],
    "oracle.n_pairs": ["oracle.kind=nonlinear"],
    "oracle.pair_scale": ["oracle.kind=nonlinear"],
    "oracle.seq_noise": ["oracle.kind=nonlinear"],
    "oracle.target_length": ["oracle.kind=length"],
    "oracle.length_weight": ["oracle.kind=length"],
    "oracle.repetition_weight": ["oracle.kind=linear+repetition"],
    "feedback.expert_mix": ["feedback.sampler=expert"],
    "feedback.expert_beta": ["feedback.sampler=expert"],
    "feedback.rounds": ["feedback.sampler=policy"],
    "feedback.k": ["feedback.kind=rankings"],
    "reward_model.ranking_likelihood": ["feedback.kind=rankings"],
    "feedback.sigma": ["feedback.kind=ratings"],
    "feedback.levels": ["feedback.kind=ratings"],
    "reward_model.rating_sigma": ["feedback.kind=ratings"],
    "agent.path_max_beta": ["agent.path=true"],
    "agent.temperature": ["agent.exploration=boltzmann"],
}
#: The agent that reads each agent.* key, cheapest first.
AGENT_ORDER = ("soft_planner", "best_of_n", "q_learning", "policy_gradient", "lspi", "linear_q", "loglinear_pg",
               "dpo", "ppo")  # fmt: skip
#: Keys whose only cost is time: an enormous value is legal and slow.
TIME_BUDGETS = {"agent.steps", "agent.epochs", "agent.minibatch", "agent.checkpoints", "feedback.rounds"}
#: Free-text keys.
FREE_TEXT = {"name"}


def _agent_for(key: str) -> str | None:
    from sim.agents import agent_spec

    rest = key.partition(".")[2]
    for name in AGENT_ORDER:
        if rest in agent_spec(name).keys:
            return name
    return None


def _context(key: str) -> list[str]:
    head = key.partition(".")[0]
    ctx = ["env=tiny"]
    if head in ("feedback", "reward_model"):
        ctx += ["pipeline=rlhf"]
        ctx += [] if key == "feedback.n" else ["feedback.n=200"]
        ctx += [] if key == "feedback.n_eval" else ["feedback.n_eval=200"]
    if head == "agent" and key != "agent.name":
        agent = _agent_for(key)
        if agent is not None and agent != "soft_planner":
            ctx.append(f"agent={agent}")
            if agent in ("dpo", "ipo"):
                ctx += ["pipeline=rlhf", "feedback.n=200", "feedback.n_eval=200"]
            if key != "agent.steps" and agent not in ("best_of_n",):
                ctx.append("agent.steps=256")
            if key != "agent.batch" and agent in ("q_learning", "policy_gradient", "lspi", "linear_q", "ppo"):
                ctx.append("agent.batch=64")
    ctx += [c for c in CONTEXT.get(key, []) if c.partition("=")[0] != key]
    return ctx


def _values(key: str, t: object) -> list[tuple[str, str]]:
    """``(value text, expectation)`` for a key of type ``t``."""
    optional = typing.get_origin(t) in (typing.Union, getattr(__import__("types"), "UnionType", None))
    base = next(a for a in typing.get_args(t) if a is not type(None)) if optional else t
    out: list[tuple[str, str]] = []
    if base is float:
        out += [("nan", "error"), ("inf", "either"), ("-inf", "either"), ("1e300", "either"), ("-1e300", "either"),
                ("1e-300", "either"), ("abc", "error")]  # fmt: skip
    elif base is int:
        big = "long" if key in TIME_BUDGETS else "either"
        out += [("-1", "either"), ("1000000000000", big), ("1.5", "error"), ("abc", "error")]
    elif base is bool:
        out += [("2", "error"), ("abc", "error")]
    elif base is str:
        out += [("bogus_value", "either" if key in FREE_TEXT else "error"), ("''", "error"), ("[a]", "error")]
    else:  # list[str]
        out += [("abc", "error"), ("[bogus_template]", "error"), ("[]", "either")]
    if optional:
        out.append(("null", "either"))
    return out


def schema_cases() -> list[Case]:
    from experiments.config import CLIConfig

    cases = []
    for key, t in _leaves(CLIConfig):
        for value, expect in _values(key, t):
            args = [*_context(key), f"{key}={value}"]
            cases.append(Case(f"schema:{key}={value}", "schema", "run", args, expect, key,
                              timeout=20 if expect == "long" else TIMEOUT))  # fmt: skip
    # the numeric edges reported in #15, in the context that reaches them
    for extra, key in [
        (["pipeline=rlhf", "reward_model.prior_scale=1e-300"], "reward_model.prior_scale"),
        (["pipeline=rlhf", "reward_model.prior_scale=1e300"], "reward_model.prior_scale"),
        (["pipeline=rlhf", "reward_model=tabular", "reward_model.prior_scale=1e-300"], "reward_model.prior_scale"),
        (["pipeline=rlhf", "reward_model=tabular", "reward_model.prior_scale=1e300"], "reward_model.prior_scale"),
        (["pipeline=rlhf", "reward_model.pessimism=1", "reward_model.prior_scale=1e300"], "reward_model.prior_scale"),
        (["pipeline=rlhf", "feedback=ratings", "feedback.sigma=1e300"], "feedback.sigma"),
        (["pipeline=rlhf", "feedback=ratings", "reward_model.rating_sigma=1e300"], "reward_model.rating_sigma"),
        (["pipeline=rlhf", "feedback=ratings", "reward_model.rating_sigma=1e-300"], "reward_model.rating_sigma"),
        (["pipeline=rlhf", "feedback=rankings", "reward_model.prior_scale=1e-300"], "reward_model.prior_scale"),
        (["pipeline=rlhf", "reward_model.tol=1e300"], "reward_model.tol"),
        (["pipeline=rlhf", "reward_model.tol=1e-300"], "reward_model.tol"),
        (["pipeline=rlhf", "reward_model.ensemble=3", "reward_model.prior_scale=1e-300"], "reward_model.prior_scale"),
        (["oracle.scale=1e300"], "oracle.scale"),
        (["oracle.scale=1e-300"], "oracle.scale"),
        (["corruption.noise.sigma=1e300", "agent=q_learning", "agent.steps=256"], "corruption.noise.sigma"),
        (["corruption.misspec.length_bias=1e300"], "corruption.misspec.length_bias"),
        (["agent.beta=1e-300"], "agent.beta"),
        (["agent.beta=1e300"], "agent.beta"),
        (["env.ref_temperature=1e-300", "env.reference=softmax"], "env.ref_temperature"),
        (["env.ref_temperature=1e300", "env.reference=softmax"], "env.ref_temperature"),
        (["pipeline=rlhf", "feedback.rationality=1e-300"], "feedback.rationality"),
        (["pipeline=rlhf", "feedback.rationality=1e300"], "feedback.rationality"),
        (["pipeline=rlhf", "feedback.shift_beta=1e-300"], "feedback.shift_beta"),
        (["pipeline=rlhf", "feedback.shift_beta=1e300"], "feedback.shift_beta"),
        (["pipeline=rlhf", "feedback.sampler=expert", "feedback.expert_beta=1e-300"], "feedback.expert_beta"),
        (["agent=ppo", "agent.steps=256", "agent.lr=1e300"], "agent.lr"),
        (["agent=q_learning", "agent.steps=256", "agent.lr=1e300"], "agent.lr"),
        (["agent=loglinear_pg", "agent.steps=50", "agent.lr=1e300"], "agent.lr"),
        (["agent=policy_gradient", "agent.steps=50", "agent.lr=1e300"], "agent.lr"),
        (["pipeline=rlhf", "agent=dpo", "agent.beta=1e-300"], "agent.beta"),
        (["pipeline=rlhf", "agent=ipo", "agent.beta=1e300"], "agent.beta"),
    ]:
        cases.append(Case("edge:" + " ".join(extra), "schema", "run", ["env=tiny", "feedback.n=200", *extra],
                          "either", key))  # fmt: skip
    return cases


def cli_cases() -> list[Case]:
    t = ["env=tiny"]
    c = []

    def add(args, expect, key=None, check=None, name=None):
        c.append(Case(f"cli:{name or ' '.join(args)}", "cli", "run", [*t, *args], expect, key, check=check))

    add(["+foo=1"], "error", "foo")
    add(["+agent.bta=1"], "error", "agent.bta")
    add(["agent.bta=1"], "error", "agent.bta")
    add(["+env.foo=1"], "error", "env.foo")
    add(["++foo=1"], "error", "foo")
    add(["foo=1"], "error", "foo")
    add(["+corruption.noise.foo=1"], "error", "corruption.noise.foo")
    add(["+corruption.bogus.x=1"], "error", "corruption.bogus")
    add(["++agent.beta=0.2"], "ok")
    add(["~agent.beta"], "either", "agent.beta")
    add(["~env"], "either", "env")
    add(["~seed"], "either", "seed")
    add(["env=nonexistent"], "error", "env")
    add(["agent=nonexistent"], "error", "agent")
    add(["oracle=nonexistent"], "error", "oracle")
    add(["corruption=bogus"], "error", "corruption")
    add(["feedback=bogus"], "error", "feedback")
    add(["reward_model=bogus"], "error", "reward_model")
    add(["+experiment=bogus"], "error", "experiment")
    add(["agent.beta"], "error", "agent.beta")
    add(["agent.beta="], "error", "agent.beta")
    add(["agent.beta==1"], "error", "agent.beta")
    add(["agent.beta=[0.1,0.2]"], "error", "agent.beta")
    add(["agent.beta={a:1}"], "error", "agent.beta")
    add(["env.horizon=3", "env.horizon=4"], "either", "env.horizon")
    add(["agent.beta='0.1'"], "either", "agent.beta")
    add(["seed=1e3"], "error", "seed")
    add(["seed=0x10"], "either", "seed")
    add(["seed=true"], "error", "seed")
    add(["seed=18446744073709551616"], "either", "seed")
    add(["agent.beta=1_000"], "either", "agent.beta")
    add(["env.eos=True"], "either", "env.eos")
    add(["env.eos=yes"], "error", "env.eos")
    add(["env.eos=1"], "error", "env.eos")
    add(["save_arrays=2"], "error", "save_arrays")
    add(["save_arrays=true", "env.compressed=true"], "error", "save_arrays")
    add(["agent.beta=${oc.env:HOME}"], "error", "agent.beta")
    add(["agent.beta=${agent.nonexistent}"], "error", "agent.beta")
    add(["agent.beta=${seed}"], "error", "agent.beta")
    add(["agent.beta=${oc.env:RMSIM_NO_SUCH_VAR}"], "error", "agent.beta")
    add(["env.n_prompts=${env.vocab_size}"], "ok")
    add(["env.vocab_size=2", "env.horizon=1000000000000"], "error", "env.horizon")
    add(["env.vocab_size=100000"], "error", "env.vocab_size")
    add(["env=large", "env.vocab_size=1000000"], "error", "env")
    add(["env.vocab_size=11", "env.horizon=7", "env.n_prompts=4", "pipeline=rlhf", "reward_model=tabular",
         "max_memory_gb=8"], "error", "reward_model", name="tabular 15 GB")  # fmt: skip
    add(["pipeline=rlhf", "feedback=rankings", "feedback.k=1000", "max_memory_gb=8"], "error", "feedback.k")
    add(["pipeline=rlhf", "feedback.n=1000000000"], "error", "feedback.n")
    add(["pipeline=rlhf", "feedback.n_eval=1000000000"], "error", "feedback.n_eval")
    add(["agent=best_of_n", "agent.n=1000000000000"], "either", "agent.n")
    add(["agent=q_learning", "agent.batch=1000000000000"], "error", "agent.batch")
    add(["max_memory_gb=1e-9"], "error", "max_memory_gb")
    add(["agent.beta=200"], "ok")
    add(["agent.beta=1e6"], "ok")
    add(["agent.beta=1e-6"], "ok")
    add(["agent=exact_planner", "agent.beta=1"], "warn", "agent.beta")
    add(["agent.lr=0.1"], "warn", "agent.lr")
    add(["feedback.flip=0.1"], "warn", "feedback.flip")
    add(["reward_model.pessimism=1"], "warn", "reward_model.pessimism")
    add(["pipeline=rlhf", "corruption.noise.sigma=1"], "warn", "corruption.noise.sigma")
    add(["pipeline=rlhf", "corruption.sparsity.budget=0.5"], "warn", "corruption.sparsity.budget")
    add(["agent=dpo"], "error", "agent")
    add(["agent=dpo", "pipeline=rlhf", "feedback=ratings"], "error", "agent")
    add(["env.compressed=true", "oracle=nonlinear"], "error", "oracle")
    add(["env.compressed=true", "agent=best_of_n", "agent.samples=1000000000000"], "error", "agent.samples")
    add(["oracle.target_length=99", "oracle=length"], "error", "oracle.target_length")
    add(["corruption.misspec.omit=[unigram,unigram]"], "either", "corruption.misspec.omit")
    add(["oracle.templates=[]"], "either", "oracle.templates")
    add(["oracle.templates=[hashed,hashed]"], "either", "oracle.templates")
    add(["oracle.kind=linear+"], "error", "oracle.kind")
    add(["oracle.kind=+"], "error", "oracle.kind")
    add(["oracle.kind=linear+linear"], "either", "oracle.kind")
    add(["pipeline=rlhf", "feedback.skip=100"], "either", "feedback.skip")
    add(["pipeline=rlhf", "feedback.prompt_coverage=1e-300"], "either", "feedback.prompt_coverage")
    add(["pipeline=rlhf", "feedback.n=1"], "either", "feedback.n")
    add(["pipeline=rlhf", "feedback.n=1", "feedback.equal=100"], "either", "feedback.equal")
    add(["pipeline=rlhf", "feedback.flip=1", "feedback.rationality=inf"], "either", "feedback.flip")
    add(["pipeline=rlhf", "reward_model=tabular", "reward_model.ensemble=2", "reward_model.pessimism=1e300"],
        "either", "reward_model.pessimism", name="tabular ensemble pessimism 1e300")  # fmt: skip
    add(["pipeline=rlhf", "reward_model.pessimism=1e300"], "either", "reward_model.pessimism")
    add(["corruption.misspec.exploit=1e300"], "either", "corruption.misspec.exploit")
    add(["corruption.misspec.scope_tokens=1000000000000"], "either", "corruption.misspec.scope_tokens")
    add(["corruption.sparsity.mode=chunk", "corruption.sparsity.chunk=1000000000000"], "either",
        "corruption.sparsity.chunk")  # fmt: skip
    add(["corruption.noise.levels=1000000000000"], "either", "corruption.noise.levels")
    add(["agent=ppo", "agent.steps=256", "agent.minibatch=1000"], "either", "agent.minibatch")
    add(["agent=ppo", "agent.steps=64", "agent.batch=64", "agent.target_kl=1e-300"], "either", "agent.target_kl")
    add(["agent=soft_planner", "agent.path=true", "agent.path_max_beta=1e300"], "either", "agent.path_max_beta")
    add(["agent=soft_planner", "agent.path=true", "agent.checkpoints=100000"], "either", "agent.checkpoints")
    add(["agent=best_of_n", "agent.path=true", "agent.n=1000000"], "either", "agent.n")
    add(["env=large", "agent=exact_planner", "env.horizon=1000000"], "either", "env.horizon")
    add(["env=large", "env.n_prompts=1000000000"], "either", "env.n_prompts")
    add(["seed=4294967296"], "ok")
    add(["seed=-0"], "ok")
    add(["name=../../escape"], "error", "name")  # sweeps go to results/sweeps/<name>/: outside results/
    add(["name=a/b"], "error", "name")
    return c


def sweep_cases() -> list[Case]:
    c = []

    def add(args, expect, key=None, check=None, name=None, prepare=None):
        c.append(Case(f"sweep:{name or ' '.join(args)}", "sweep", "run", ["-m", "env=tiny", *args], expect, key,
                      prepare=prepare, check=check))  # fmt: skip

    add(["agent.beta=0.1,-1"], "error", "agent.beta", check="nothing_ran")
    add(["agent=exact_planner", "seed=" + ",".join(map(str, range(99))) + ",-1"], "error", "seed",
        check="nothing_ran", name="100 jobs, job 100 has seed=-1")  # fmt: skip
    add(["agent=exact_planner", "seed=range(0,1000)", "corruption.noise.sigma=0,-1"], "error",
        "corruption.noise.sigma", check="nothing_ran", name="2000 jobs, half bad")  # fmt: skip
    add(["agent=exact_planner", "seed=range(0,20000)", "corruption.misspec.angle=0,9"], "error",
        "corruption.misspec.angle", check="nothing_ran", name="40000 jobs, half bad")  # fmt: skip
    add(["agent.beta=0.1,abc"], "error", "agent.beta", check="nothing_ran")
    add(["agent.beta=0.1,nan"], "error", "agent.beta", check="nothing_ran")
    add(["+agent.bta=1,2"], "error", "agent.bta", check="nothing_ran")
    add(["save_arrays=false,2"], "error", "save_arrays", check="nothing_ran")
    add(["env.eos=true,yes"], "error", "env.eos", check="nothing_ran")
    add(["agent=exact_planner,nonexistent"], "error", "agent", check="nothing_ran")
    add(["env=tiny,nonexistent"], "error", "env", check="nothing_ran")
    add(["agent.beta=range(0,3)"], "error", "agent.beta", check="nothing_ran")
    add(["agent=exact_planner,dpo"], "error", "agent", check="nothing_ran")
    add(["pipeline=direct,rlhf", "agent=dpo"], "error", "agent", check="nothing_ran")
    add(["oracle.target_length=1,9", "oracle=length"], "error", "oracle.target_length", check="nothing_ran")
    add(["hydra/launcher=bogus"], "error", "hydra/launcher", check="nothing_ran")
    add(["pipeline=rlhf", "feedback.n=200", "feedback.skip=0,100"], "either", "feedback.skip", check="sweep_summary")
    add(["agent=exact_planner", "agent.beta=1,2"], "ok", check="all_ran")
    add(["agent=exact_planner", "seed=0,1", "corruption.misspec.project_to=[unigram,position,bigram]",
         "corruption.misspec.omit=[bigram]", "corruption.misspec.length_bias=0.1", "corruption.misspec.angle=0.1",
         "corruption.misspec.scope_prompts=0.5", "oracle.scale=1.5", "oracle.seq_noise=0.25",
         "corruption.sparsity.budget=0.75", "corruption.noise.drop=0.125", "corruption.misspec.scope_tokens=2"],
        "ok", check="all_ran", name="long override list")  # fmt: skip
    add(["agent=exact_planner", "corruption.misspec.project_to=[position]", "corruption.misspec.omit=[unigram]"],
        "error", "corruption.misspec.omit", check="nothing_ran", name="omit outside project_to")  # fmt: skip
    add(["agent=exact_planner", "name=../../escape"], "error", "name", check="nothing_ran")
    add(["agent=exact_planner", "seed=0,1"], "ok", check="resumed", prepare="sweep_done", name="same sweep again")
    add(["agent=exact_planner", "seed=0,1,2"], "ok", check="all_ran", prepare="sweep_done", name="sweep extended")
    add(["agent=exact_planner", "seed=0,1"], "ok", check="all_ran", prepare="stale_lock", name="stale .lock")
    add(["agent=exact_planner", "seed=0,1"], "ok", check="all_ran", prepare="failed_txt_and_metrics",
        name="failed.txt beside a valid metrics.json")  # fmt: skip
    add(["agent=exact_planner", "seed=0,1"], "either", "seed=0", check="all_ran", prepare="job_dir_is_a_file",
        name="a job directory is a file")  # fmt: skip
    add(["agent=exact_planner", "seed=0,1"], "ok", check="all_ran", prepare="sweep_dir_empty_hydra",
        name="a job whose .hydra is garbage")  # fmt: skip
    add(["-m", "agent=exact_planner"], "either", "unrecognized arguments", name="-m twice")  # hydra's argparse
    add(["agent=exact_planner", "seed="], "error", "seed", check="nothing_ran")
    add(["agent=exact_planner", "seed=0,,1"], "error", "seed", check="nothing_ran")
    add(["agent=exact_planner", "seed=choice()"], "error", "seed", check="nothing_ran")
    return c


DAMAGES = {
    "truncated": lambda p: p.write_text(p.read_text()[:40]),
    "empty": lambda p: p.write_text(""),
    "garbage": lambda p: p.write_bytes(b"\x00\xff\xfe garbage \x89PNG"),
    "list": lambda p: p.write_text("[1, 2]"),
    "null": lambda p: p.write_text("null"),
    "nan_gap": lambda p: p.write_text(p.read_text().replace('"gap": ', '"gap": NaN, "x": ')),
    "inf_string": lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "oracle_return": "inf"})),
    "null_core": lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "proxy_return": None})),
    "missing_key": lambda p: p.write_text(
        json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "kl_to_reference"})
    ),  # fmt: skip
    "bool_core": lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "gap": True})),
    "huge_number": lambda p: p.write_text(p.read_text().replace('"gap": ', '"gap": 1e999, "x": ')),
    "directory": lambda p: (p.unlink(), p.mkdir()),
    "dangling_symlink": lambda p: (p.unlink(), p.symlink_to(p.parent / "nowhere.json")),
    "deep_nesting": lambda p: p.write_text("[" * 100000 + "]" * 100000),
    "utf16": lambda p: p.write_text(p.read_text(), encoding="utf-16"),
}


def resume_cases() -> list[Case]:
    return [Case(f"resume:{d}", "resume", "run", ["-m", "env=tiny", "agent=exact_planner", "seed=0,1"], "ok",
                 prepare=f"damage:{d}", check="repaired") for d in DAMAGES]  # fmt: skip


def collect_cases() -> list[Case]:
    c = []

    def add(name, args, expect, key=None, prepare=None, check=None):
        c.append(Case(f"collect:{name}", "collect", "collect", args, expect, key, prepare=prepare, check=check))

    add("no arguments", [], "error", "dirs")
    add("a missing directory", ["{work}/nope"], "error", "nope")
    add("a file", ["{work}/file.txt"], "error", "file.txt", prepare="file")
    add("an empty directory", ["{work}/empty"], "error", "empty", prepare="empty")
    add("only damaged runs", ["{work}/sweep"], "error", "sweep", prepare="damage_all")
    for d in DAMAGES:
        add(f"one damaged ({d})", ["{work}/sweep"], "warn", "metrics.json", prepare=f"damage:{d}",
            check="rows=1")  # fmt: skip
    add("the same directory twice", ["{work}/sweep", "{work}/sweep"], "ok", prepare="sweep_done", check="rows=2")
    add("a directory and its job", ["{work}/sweep", "{work}/sweep/" + JOB0], "ok", prepare="sweep_done",
        check="rows=2")  # fmt: skip
    add("a job directory alone", ["{work}/sweep/" + JOB0], "ok", prepare="sweep_done", check="rows=1")
    add("--out to a new directory", ["{work}/sweep", "--out", "{work}/new/deeper"], "ok", prepare="sweep_done",
        check="rows=2")  # fmt: skip
    add("--out is a file", ["{work}/sweep", "--out", "{work}/file.txt"], "error", "file.txt",
        prepare="sweep_done+file")  # fmt: skip
    add("overrides.yaml garbage", ["{work}/sweep"], "ok", prepare="overrides_garbage", check="rows=2")
    add("overrides.yaml not a list", ["{work}/sweep"], "ok", prepare="overrides_dict", check="rows=2")
    add("overrides.yaml missing", ["{work}/sweep"], "ok", prepare="overrides_missing", check="rows=2")
    add("overrides.yaml a bare key", ["{work}/sweep"], "ok", prepare="overrides_bare", check="rows=2")
    add("a symlink loop", ["{work}/sweep"], "ok", prepare="symlink_loop", check="rows=2")
    add("a metric that is a list", ["{work}/sweep"], "ok", prepare="metric_list", check="rows=2")
    add("a metric named like a config key", ["{work}/sweep"], "ok", prepare="metric_seed_string", check="rows=2")
    add("unknown option", ["--bogus", "{work}/sweep"], "error", "--bogus", prepare="sweep_done")
    add("a single run directory", ["{work}/run"], "ok", prepare="single_run", check="rows=1")
    return c


_ENV = "import gymnasium as gym, numpy as np, sim\n"


def env_cases() -> list[Case]:
    c = []

    def add(name, body, expect, key=None):
        c.append(Case(f"env:{name}", "env", "py", _ENV + body, expect, key))

    mk = "env = gym.make('rmsim/TextMDP-v0', {})\nobs, info = env.reset(seed=0)\nresult = {{'obs': obs}}\n"
    for kw, expect, key in [
        ("n_prompts=0", "error", "n_prompts"), ("n_prompts=-1", "error", "n_prompts"),
        ("vocab_size=1", "error", "vocab_size"), ("horizon=0", "error", "horizon"),
        ("horizon=10**12, vocab_size=2", "error", "horizon"), ("vocab_size=10**9", "error", "vocab_size"),
        ("vocab_size='a'", "error", "vocab_size"), ("n_prompts=2.5", "error", "n_prompts"),
        ("n_prompts=True", "error", "n_prompts"), ("eos='yes'", "error", "eos"),
        ("reference='bogus'", "error", "reference"), ("ref_temperature=float('nan')", "error", "ref_temperature"),
        ("ref_temperature=-1", "error", "ref_temperature"), ("foo=1", "error", "foo"),
        ("config={'env': {'bogus': 1}}", "error", "bogus"), ("config={'bogus': 1}", "error", "bogus"),
        ("config={'env': 3}", "error", "env"), ("config='env=tiny'", "error", "config"),
        ("config=42", "error", "config"), ("config=[1, 2]", "error", "config"),
        ("config={'agent': {'beta': -1}}", "error", "agent.beta"),
        ("config={'env': {'n_prompts': 2, 'vocab_size': 3, 'horizon': 2}}", "ok", None),
        ("world_seed=-1", "error", "seed"), ("world_seed='a'", "error", "seed"), ("world_seed=2**70", "either", "seed"),
        ("world_seed=1.5", "error", "seed"),
        ("obs_mode='bogus'", "error", "obs_mode"), ("render_mode='bogus'", "error", "render_mode"),
        ("oracle={'kind': 'bogus'}", "error", "oracle.kind"),
        ("oracle={'scale': float('inf')}", "error", "oracle.scale"),
        ("oracle='linear'", "error", "oracle"),
        ("corruption={'noise': {'sigma': -1}}", "error", "corruption.noise.sigma"),
        ("corruption={'bogus': {}}", "error", "corruption"), ("corruption={'noise': {'bogus': 1}}", "error", "bogus"),
        ("corruption={'noise': 1}", "error", "noise"),
        ("config={'pipeline': 'rlhf', 'feedback': {'n': 50, 'n_eval': 50}, 'reward_model': {'prior_scale': 1e-300}}",
         "either", "prior_scale"),
        ("config={'pipeline': 'rlhf', 'feedback': {'n': 50, 'n_eval': 50, 'kind': 'ratings', 'sigma': 1e300}}",
         "either", "sigma"),
        ("config={'env': {'compressed': True}}", "either", "compressed"),
        ("config={'env': {'compressed': True}, 'oracle': {'kind': 'nonlinear'}}", "error", "oracle"),
        ("n_prompts=2, vocab_size=3, horizon=2, setup=None", "ok", None),
    ]:  # fmt: skip
        add(kw, mk.format(kw), expect, key)
    tiny = "env = gym.make('rmsim/TextMDP-v0', n_prompts=2, vocab_size=4, horizon=3)\nobs, info = env.reset(seed=0)\n"
    for action, expect in [("-1", "error"), ("4", "error"), ("1.5", "either"), ("'a'", "error"), ("None", "error"),
                           ("np.array([1, 2])", "error"), ("np.int64(2)", "ok"), ("float('nan')", "error"),
                           ("True", "either")]:  # fmt: skip
        add(f"step({action})", tiny + f"out = env.step({action})\nresult = {{'reward': out[1]}}\n", expect, "action")
    add("step before reset", "env = gym.make('rmsim/TextMDP-v0', n_prompts=2, vocab_size=4, horizon=3)\n"
        "out = env.step(1)\nresult = {'reward': out[1]}\n", "error", "reset")  # fmt: skip
    add("step after the episode ended", tiny + "env.step(0)\nout = env.step(1)\nresult = {'reward': out[1]}\n",
        "error", "reset")  # fmt: skip
    add("reset(seed=-1)", tiny + "obs, info = env.reset(seed=-1)\nresult = {'obs': obs}\n", "error", "seed")
    add("reset(seed='a')", tiny + "obs, info = env.reset(seed='a')\nresult = {'obs': obs}\n", "error", "seed")
    vec = "envs = gym.make_vec('rmsim/TextMDP-v0', {}, vectorization_mode='vector_entry_point', n_prompts=2, " \
          "vocab_size=4, horizon=3)\nobs, info = envs.reset(seed=0)\n"  # fmt: skip
    for n, expect in [("0", "error"), ("-1", "error"), ("10**12", "error"), ("2.5", "error"), ("'a'", "error")]:
        add(f"make_vec num_envs={n}", vec.format(f"num_envs={n}") + "result = {'obs': obs}\n", expect, "num_envs")
    for actions, expect in [("np.array([-1, 1])", "error"), ("np.array([1])", "error"), ("np.array([4, 1])", "error"),
                            ("np.array([[1, 1]])", "either"), ("np.array([1.5, 1.0])", "either"),
                            ("np.array([np.nan, 1.0])", "error"), ("[1, 1]", "ok")]:  # fmt: skip
        add(f"vec step({actions})", vec.format("num_envs=2") + f"out = envs.step({actions})\n"
            "result = {'reward': out[1]}\n", expect, "action")  # fmt: skip
    mkv = "env = gym.make('rmsim/MarkovText-v0', {})\nobs, info = env.reset(seed=0)\nresult = {{'obs': obs}}\n"
    for kw, expect, key in [
        ("vocab_size=1", "error", "vocab_size"), ("horizon=0", "error", "horizon"),
        ("vocab_size=10**7", "error", "vocab_size"), ("horizon=10**12", "error", "horizon"),
        ("n_prompts=10**12", "error", "n_prompts"), ("oracle={'kind': 'nonlinear'}", "error", "oracle"),
        ("vocab_size=50, horizon=4", "ok", None), ("compressed=False, vocab_size=5, horizon=3", "either", "compressed"),
        ("obs_mode='state', vocab_size=5, horizon=3", "either", "obs_mode"),
    ]:  # fmt: skip
        add(f"markov {kw}", mkv.format(kw), expect, key)
    return c


_SCORE = ("import gymnasium as gym, numpy as np, sim\n"
          "env = gym.make('rmsim/TextMDP-v0', n_prompts=2, vocab_size=4, horizon=3)\n"
          "S, A = env.unwrapped.world.n_prefix_states, env.unwrapped.world.n_actions\n")  # fmt: skip


def score_cases() -> list[Case]:
    c = []

    def add(name, policy, expect, key="polic|action|rows", extra=""):
        body = _SCORE + f"result = sim.score({policy}, env{extra})\n"
        c.append(Case(f"score:{name}", "score", "py", body, expect, key))

    add("uniform table", "np.full((S, A), 1 / A)", "ok")
    add("wrong rows", "np.full((S + 1, A), 1 / A)", "error")
    add("wrong columns", "np.full((S, A + 1), 1 / (A + 1))", "error")
    add("1-d", "np.full(S * A, 1 / A)", "error")
    add("3-d", "np.full((S, A, 1), 1 / A)", "error")
    add("NaN table", "np.full((S, A), np.nan)", "error")
    add("inf table", "np.full((S, A), np.inf)", "error")
    add("rows sum to 2", "np.full((S, A), 2 / A)", "error")
    add("negative entries", "np.tile([1.5, -0.5, 0, 0], (S, 1))", "error")
    add("zeros", "np.zeros((S, A))", "error")
    add("int table", "np.eye(A, dtype=int)[np.zeros(S, dtype=int)]", "ok")
    add("bool table", "np.eye(A, dtype=bool)[np.zeros(S, dtype=int)]", "either")
    add("object table", "np.full((S, A), 'a', dtype=object)", "error")
    add("list of lists", "[[1 / A] * A] * S", "either")
    add("empty array", "np.zeros((0, A))", "error")
    add("None", "None", "error")
    add("a string", "'uniform'", "error")
    add("an int", "3", "error")
    add("function giving probabilities", "lambda obs: np.full((len(obs), A), 1 / A)", "ok")
    add("function giving actions", "lambda obs: np.ones(len(obs), dtype=int)", "ok")
    add("function giving out-of-range actions", "lambda obs: np.full(len(obs), A, dtype=int)", "error")
    add("function giving negative actions", "lambda obs: np.full(len(obs), -1, dtype=int)", "error")
    add("function giving float actions", "lambda obs: np.full(len(obs), 1.5)", "error")
    add("function giving NaN probabilities", "lambda obs: np.full((len(obs), A), np.nan)", "error")
    add("function giving wrong shape", "lambda obs: np.full((len(obs), A + 1), 1 / (A + 1))", "error")
    add("function giving a scalar", "lambda obs: 1", "error")
    add("function giving None", "lambda obs: None", "error")
    add("function giving too few rows", "lambda obs: np.full((1, A), 1 / A)", "error")
    # a policy's own error reaches the user unchanged (the correct behaviour): the case turns exactly that error
    # into its "clean" report, and anything else (a wrapped or different error) stays a traceback
    add("function raising", "lambda obs: 1 / 0", "either", key="propagated")
    c[-1].args = _SCORE + ("try:\n    result = sim.score(lambda obs: 1 / 0, env)\nexcept ZeroDivisionError as e:\n"
                           "    raise ValueError(f'the policy own error propagated: {e!r}')\n")  # fmt: skip
    add("function with two arguments", "lambda obs, x: obs", "error", key="propagated")
    c[-1].args = _SCORE + ("try:\n    result = sim.score(lambda obs, x: obs, env)\nexcept TypeError as e:\n"
                           "    if 'lambda' not in str(e):\n        raise\n"
                           "    raise ValueError(f'the policy own error propagated: {e!r}')\n")  # fmt: skip
    add("predict giving tuples", "type('M', (), {'predict': lambda self, obs, deterministic=False: "
        "(np.ones(len(obs), dtype=int), None)})()", "ok")  # fmt: skip
    add("predict giving garbage", "type('M', (), {'predict': lambda self, obs, deterministic=False: "
        "('x', None)})()", "error")  # fmt: skip
    add("predict giving out-of-range", "type('M', (), {'predict': lambda self, obs, deterministic=False: "
        "(np.full(len(obs), 99), None)})()", "error")  # fmt: skip
    add("target None", "x", "error", "target|rmsim world")
    c[-1].args = _SCORE + "result = sim.score(np.full((S, A), 1 / A), None)\n"
    add("target a string", "x", "error", "target|rmsim world")
    c[-1].args = _SCORE + "result = sim.score(np.full((S, A), 1 / A), 'rmsim/TextMDP-v0')\n"
    add("target a CartPole", "x", "error", "target|rmsim world")
    c[-1].args = _SCORE + "result = sim.score(np.full((S, A), 1 / A), gym.make('CartPole-v1'))\n"
    for extra, expect, key in [
        (", obs_mode='bogus'", "error", "obs_mode"), (", obs_mode='markov'", "either", "obs_mode"),
        (", mc_episodes=-1", "error", "mc_episodes"), (", mc_episodes=1", "either", "mc_episodes"),
        (", mc_episodes=2.5", "error", "mc_episodes"), (", mc_episodes=10**12", "error", "mc_episodes"),
        (", seed=-1, mc_episodes=10", "error", "seed"), (", seed='a', mc_episodes=10", "error", "seed"),
        (", deterministic='yes'", "either", "deterministic"),
    ]:  # fmt: skip
        add(f"uniform table{extra}", "np.full((S, A), 1 / A)", expect, key, extra=extra)
    return c


GROUPS = {"schema": schema_cases, "cli": cli_cases, "sweep": sweep_cases, "resume": resume_cases,
          "collect": collect_cases, "env": env_cases, "score": score_cases}  # fmt: skip


# -------------------------------------------------------------------------------------------------- preparation
#: The job directories of the template sweep (``-m env=tiny agent=exact_planner seed=0,1``).
JOB0, JOB1 = "agent=exact_planner,env=tiny,seed=0", "agent=exact_planner,env=tiny,seed=1"


def _sweep(work: Path, seeds: str = "0,1") -> Path:
    """A finished 2-job sweep in ``work/sweep`` (jobs ``seed=0``, ``seed=1``), copied from a cached template."""
    template = CACHE / f"sweep-{seeds}"
    if not template.exists():  # made once by main() before any case runs
        tmp = CACHE / f".tmp-{os.getpid()}"
        subprocess.run([str(PY), "-m", "experiments.run", "-m", "env=tiny", "agent=exact_planner", f"seed={seeds}",
                        f"hydra.sweep.dir={tmp}"], cwd=ROOT, capture_output=True, check=True, timeout=120)  # fmt: skip
        tmp.rename(template)
    shutil.copytree(template, work / "sweep", symlinks=True)
    return work / "sweep"


def prepare(case: Case, work: Path) -> None:
    how = case.prepare or ""
    if not how:
        return
    for part in how.split("+"):
        if part == "file":
            (work / "file.txt").write_text("not a directory\n")
        elif part == "empty":
            (work / "empty").mkdir()
        elif part in ("sweep_done", "stale_lock", "failed_txt_and_metrics", "job_dir_is_a_file",
                      "sweep_dir_empty_hydra", "overrides_garbage", "overrides_dict", "overrides_missing",
                      "overrides_bare", "symlink_loop", "metric_list", "metric_seed_string", "damage_all"):  # fmt: skip
            s = _sweep(work)
            job = s / JOB0
            if part == "stale_lock":
                (job / "metrics.json").unlink()
                (job / ".lock").write_text("stale\n")
            elif part == "failed_txt_and_metrics":
                (job / "failed.txt").write_text("an old failure\n")
            elif part == "job_dir_is_a_file":
                shutil.rmtree(job)
                job.write_text("a file where a job directory should be\n")
            elif part == "sweep_dir_empty_hydra":
                (job / "metrics.json").unlink()
                for p in (job / ".hydra").iterdir():
                    p.write_text(": garbage : [\n")
            elif part.startswith("overrides_"):
                p = job / ".hydra" / "overrides.yaml"
                if part == "overrides_garbage":
                    p.write_text(": [ garbage\n\t- x")
                elif part == "overrides_dict":
                    p.write_text("a: 1\n")
                elif part == "overrides_missing":
                    p.unlink()
                else:
                    p.write_text("- agent.beta\n- =3\n")
            elif part == "symlink_loop":
                (s / "loop").symlink_to(s, target_is_directory=True)
            elif part == "metric_list":
                m = json.loads((job / "metrics.json").read_text())
                (job / "metrics.json").write_text(json.dumps({**m, "extra": [1, 2, {"a": None}]}))
            elif part == "metric_seed_string":
                m = json.loads((job / "metrics.json").read_text())
                (job / "metrics.json").write_text(json.dumps({**m, "seed": "zero", "env": {"x": 1}}))
            elif part == "damage_all":
                for j in (JOB0, JOB1):
                    DAMAGES["truncated"](s / j / "metrics.json")
        elif part == "single_run":
            _sweep(work)
            shutil.copytree(work / "sweep" / JOB0, work / "run", symlinks=True)
        elif part.startswith("damage:"):
            s = _sweep(work)
            DAMAGES[part.partition(":")[2]](s / JOB0 / "metrics.json")
        else:
            raise ValueError(f"unknown preparation {part}")


# ------------------------------------------------------------------------------------------------------ running
def _argv(case: Case, work: Path) -> list[str]:
    if case.kind == "run":
        args = list(case.args)
        if "-m" in args:
            args.append(f"hydra.sweep.dir={work / 'sweep'}")
        else:
            args.append(f"hydra.run.dir={work / 'run'}")
        return ["-m", "experiments.run", *args]
    if case.kind == "collect":
        return ["-m", "experiments.collect", *[a.replace("{work}", str(work)) for a in case.args]]
    return ["-c", WRAP.format(body=case.args)]


WRAP = """
import json, math, sys, traceback
def _finite(x):
    import numpy as np
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        return True
    return bool(np.all(np.isfinite(a)))
try:
    exec(compile({body!r}, "<case>", "exec"))
except Exception as e:
    from sim.errors import ConfigError
    import gymnasium.error
    gym_error = type(e).__module__.startswith("gymnasium") or isinstance(e, gymnasium.error.Error)
    if type(e) in (ValueError, TypeError) or isinstance(e, ConfigError) or gym_error:
        print(f"rmsim-case error {{type(e).__name__}}: {{e}}", file=sys.stderr)
        sys.exit(2)
    traceback.print_exc()
    sys.exit(3)
bad = {{k: repr(v)[:80] for k, v in result.items() if not _finite(v)}}
print("rmsim-case result " + json.dumps({{"nonfinite": bad, "keys": sorted(result)}}))
"""


def _run_forked(argv: list[str], out: Path, err: Path, timeout: float) -> tuple[int | None, float]:
    """Execute ``python <argv>`` in a child forked from this process (its imports already done)."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: exactly what `python -m mod args` / `python -c code` would do
        code = 1
        try:
            os.setsid()
            fo, fe = os.open(out, os.O_WRONLY | os.O_CREAT, 0o644), os.open(err, os.O_WRONLY | os.O_CREAT, 0o644)
            os.dup2(fo, 1)
            os.dup2(fe, 2)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            os.chdir(ROOT)
            import runpy

            try:
                if argv[0] == "-m":
                    sys.argv = [argv[1], *argv[2:]]
                    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
                else:
                    sys.argv = ["-c"]
                    exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
                code = 0
            except SystemExit as e:
                if e.code is None:
                    code = 0
                elif isinstance(e.code, int):
                    code = e.code
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            except BaseException:  # noqa: BLE001  (what the interpreter does with an uncaught exception)
                import traceback

                traceback.print_exc()
                code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return (os.waitstatus_to_exitcode(status), time.perf_counter() - t0)
        if time.perf_counter() - t0 > timeout:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return None, time.perf_counter() - t0
        time.sleep(0.05)


def _run_subprocess(argv: list[str], out: Path, err: Path, timeout: float) -> tuple[int | None, float]:
    t0 = time.perf_counter()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    with open(out, "w") as fo, open(err, "w") as fe:
        p = subprocess.run(["timeout", "-s", "KILL", str(int(timeout)), "nice", "-n", "10", str(PY), *argv],
                           cwd=ROOT, env=env, stdout=fo, stderr=fe)  # fmt: skip
    rc = None if p.returncode in (124, 137, -9) else p.returncode
    return rc, time.perf_counter() - t0


def _metrics_ok(path: Path) -> str | None:
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return f"{path.name}: {type(e).__name__}"
    bad = [k for k in CORE if not isinstance(m.get(k), int | float) or not math.isfinite(m[k])]
    return f"{path}: non-finite or missing {bad}" if bad else None


def _jobs(work: Path) -> list[Path]:
    s = work / "sweep"
    return sorted(p for p in s.iterdir() if p.is_dir() and (p / ".hydra").is_dir()) if s.is_dir() else []


def verify(case: Case, work: Path, out: str, err: str) -> str | None:
    """Why a run that exited 0 is not a correct result (None if it is)."""
    if case.kind == "run" and "-m" not in case.args:
        p = work / "run" / "metrics.json"
        if not p.exists():
            return "exit 0 but no metrics.json"
        why = _metrics_ok(p)
        if why:
            return why
        m = json.loads(p.read_text())
        if m.get("rm_accuracy_in_dist") == 0.5 and m.get("proxy_return") == 0 and m.get("reference_proxy_return") == 0:
            return "an unfitted reward model (accuracy 0.5, proxy identically 0) recorded as finished"
    if case.kind == "run" and "-m" in case.args:
        jobs = _jobs(work)
        if not jobs:
            return "exit 0 but no job ran"
        for j in jobs:
            if (j / "metrics.json").exists():
                why = _metrics_ok(j / "metrics.json")
                if why:
                    return why
            elif not (j / "failed.txt").exists() and case.check != "nothing_ran":
                return f"{j.name}: neither metrics.json nor failed.txt"
        if case.check == "resumed" and "skipped" not in out:
            return "the finished jobs were not skipped"
        if case.check == "repaired":
            if "seed=0" not in err or "metrics.json" not in err:
                return "the damaged metrics.json was not reported"
    if case.kind == "py":
        line = next((x for x in out.splitlines() if x.startswith("rmsim-case result ")), None)
        if line is None:
            return "no result"
        res = json.loads(line.partition("result ")[2])
        if res["nonfinite"]:
            return f"non-finite result {res['nonfinite']}"
    if case.kind == "collect":
        if case.check and case.check.startswith("rows="):
            csv = next(iter(sorted(work.rglob("table.csv"))), None)
            if csv is None:
                return "no table.csv"
            import pandas as pd

            n = len(pd.read_csv(csv))
            if n != int(case.check.partition("=")[2]):
                return f"table has {n} rows, expected {case.check.partition('=')[2]}"
    if case.expect == "warn":
        if "warning" not in err or (case.key and case.key not in err):
            return f"no warning naming {case.key}"
    return None


def classify(case: Case, rc: int | None, seconds: float, out: str, err: str, work: Path) -> Outcome:
    text = out + err
    failed_tb = [p for p in work.rglob("failed.txt") if "Traceback" in p.read_text(errors="replace")]
    noise = ("RuntimeWarning: 'experiments.run' found in sys.modules", "logger.warn(", "warnings.warn(")
    lines = [x for x in err.strip().splitlines() if x.strip() and not any(n in x for n in noise)]
    last = (lines or out.strip().splitlines() or [""])[-1][:300]
    o = Outcome(case.id, case.group, "", rc, round(seconds, 2), last, args=case.args)
    if rc is None:
        o.cls = "ok" if case.expect == "long" else "hang"
        o.note = "legal and long: killed at the timeout" if case.expect == "long" else ""
        return o
    if "Traceback (most recent call last)" in text or "HYDRA_FULL_ERROR" in text or rc < 0 or rc == 3 or failed_tb:
        o.cls = "traceback"
        lines = [x for x in err.splitlines() if x and not x.startswith(" ") and "HYDRA_FULL_ERROR" not in x]
        o.message = (lines[-1] if lines else last)[:300]
        if failed_tb:
            o.note = f"traceback in {failed_tb[0].relative_to(work)}"
            o.message = [x for x in failed_tb[0].read_text().splitlines() if x.strip()][0][:300]
        return o
    if rc == 0:
        if case.expect == "error":
            o.cls, o.note = "silent", "accepted where an error was due"
            return o
        why = verify(case, work, out, err)
        if why and case.check == "sweep_summary" and "failed" in text:
            why = None
        o.cls, o.note = ("silent", why) if why else ("ok", "")
        return o
    named = case.key is None or any(k.lower() in text.lower() for k in case.key.split("|"))
    rmsim = "rmsim:" in err or "rmsim-case error" in err or "usage:" in err  # argparse's own refusal: exit 2
    if case.kind == "run" and "-m" in case.args and case.check == "nothing_ran" and _jobs(work):
        o.cls, o.note = "silent", f"not refused before launch: {len(_jobs(work))} job(s) started"
        return o
    if rc == 1 and case.kind == "run" and ("rmsim: run failed" in err or "rmsim: failed" in err):
        o.cls = "clean" if named or "failed" in err else "unclear"
    elif rc == 2 and rmsim and named:
        o.cls = "clean"
    else:
        o.cls = "unclear"
        o.note = "refused without naming the key" if rc == 2 else f"exit {rc}, not rmsim's exit 2"
    if case.expect in ("ok", "warn"):
        o.refused_legal = True
    return o


def run_case(case: Case, base: Path, use_subprocess: bool) -> Outcome:
    work = Path(tempfile.mkdtemp(prefix="case-", dir=base))
    try:
        prepare(case, work)
        argv = _argv(case, work)
        out, err = work / ".stdout", work / ".stderr"
        runner = _run_subprocess if use_subprocess else _run_forked
        rc, seconds = runner(argv, out, err, case.timeout)
        o = classify(case, rc, seconds, out.read_text(errors="replace"), err.read_text(errors="replace"), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return o


#: Where the template sweep is kept (set per invocation by main()).
CACHE = Path(tempfile.gettempdir())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=list(GROUPS), help="groups to run (default: all)")
    ap.add_argument("--match", help="only cases whose id contains this")
    ap.add_argument("--out", default=str(ROOT / "results" / "badinput.json"))
    ap.add_argument("--subprocess", action="store_true", help="run each case as `timeout 60 python ...`")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    os.nice(10)
    os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0")
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    import gymnasium  # noqa: F401

    import experiments.run  # noqa: F401  (imported once; every forked case shares it)
    import sim  # noqa: F401

    cases = [c for g in (args.only or GROUPS) for c in GROUPS[g]()]
    if args.match:
        cases = [c for c in cases if args.match in c.id]
    global CACHE
    base = Path(tempfile.mkdtemp(prefix="rmsim-badinput-"))  # this invocation's own: two may run at once
    CACHE = base / "cache"
    CACHE.mkdir()
    _sweep(Path(tempfile.mkdtemp(dir=base)))  # the template sweep, made before any case runs
    t0 = time.perf_counter()
    outcomes: list[Outcome] = []
    # at most --jobs cases at once: fork a runner per case from a thread pool
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for i, o in enumerate(pool.map(lambda c: run_case(c, base, args.subprocess), cases)):
            outcomes.append(o)
            flag = " (refused a legal input)" if o.refused_legal else ""
            if o.cls not in ("ok", "clean") or o.refused_legal:
                print(f"[{i + 1}/{len(cases)}] {o.cls:9s} {o.id}: {o.message} {o.note}{flag}", flush=True)
    shutil.rmtree(base, ignore_errors=True)
    counts = {k: sum(o.cls == k for o in outcomes) for k in ("clean", "traceback", "silent", "hang", "unclear", "ok")}
    summary = {
        "tried": len(outcomes),
        **counts,
        "refused_legal": sum(o.refused_legal for o in outcomes),
        "by_group": {
            g: {k: sum(o.cls == k for o in outcomes if o.group == g) for k in counts}
            for g in dict.fromkeys(o.group for o in outcomes)
        },  # fmt: skip
        "seconds": round(time.perf_counter() - t0, 1),
        "runner": "subprocess" if args.subprocess else "fork",
        "defects": [dataclasses.asdict(o) for o in outcomes if o.cls not in ("ok", "clean") or o.refused_legal],
        "cases": [dataclasses.asdict(o) for o in outcomes],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("defects", "cases")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
