"""Render sbatch scripts for a sweep and submit them, never waiting for a job.

Safety: every value that reaches a script is either checked against a strict
pattern (partition, account, qos, time, memory, GPU type, job name, variable
names), a plain integer, or quoted with ``shlex.quote`` (environment values,
paths, the container prefix, the command). Extra ``#SBATCH`` lines and preamble
lines are the user's own script text (a sweep file is code, like a batch script);
they may not contain line breaks, so an ``#SBATCH`` line can never turn into a
shell line, and each ``#SBATCH`` line must be one option as sbatch splits it
(``directive_words``), since sbatch refuses a line with a stray second word.

Submission: ``sbatch --parsable`` returns as soon as the controller accepts the
job. Array indices above the cluster's ``MaxArraySize`` are not allowed, so the
indices are cut into chunks that each fit, and every chunk is submitted with its
first index as the script's argument (``point = OFFSET + SLURM_ARRAY_TASK_ID``).

Multi-node: ``nodes = K`` (K > 1) asks for K nodes with one task each
(``--ntasks-per-node=1``) and ``gpus_per_node`` GPUs on each (``--gres`` counts
per node); the array script finds the first node (``scontrol show hostnames
$SLURM_JOB_NODELIST``) and exports its rendezvous endpoint as
``LLMBENCH_RDZV_ENDPOINT``, and the task wrapper (``harness.sweep_tasks``) starts
``srun`` + ``torchrun --nnodes K`` there. The port is ``RDZV_PORT_BASE`` plus the
job id modulo ``RDZV_PORT_SPAN``, so two jobs sharing a node rarely meet.

Queue: ``queue`` asks ``squeue --array`` which jobs and array tasks are still
pending or running (finished ones are not listed; there is no ``sacct``).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path
from string import Template

from workloads.errors import UserError

TEMPLATES = Path(__file__).with_name("templates")
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize
SBATCH_TIMEOUT_S = 120
GPU_SYNTAX = ("gres", "gpus")
RDZV_ENV = "LLMBENCH_RDZV_ENDPOINT"  # host:port of a multi-node job's c10d rendezvous (its first node)
RDZV_PORT_BASE, RDZV_PORT_SPAN = 29500, 1000

WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
WORDS = re.compile(rf"{WORD.pattern}(,{WORD.pattern})*")  # a partition may be a comma-separated list
TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE")
MEM = re.compile(r"\d+[KMGT]?")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _text(key: str, value, pattern: re.Pattern | None = None, example: str = "") -> str:
    if not isinstance(value, str) or not value:
        raise UserError(f"[slurm] {key} must be a non-empty string, got {value!r}")
    if pattern is not None and not pattern.fullmatch(value):
        raise UserError(f"[slurm] {key} = {value!r} is not a valid value" + (f" (e.g. {example})" if example else ""))
    return value


def _int(key: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"[slurm] {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _lines(key: str, value) -> tuple[str, ...]:
    lines = [value] if isinstance(value, str) else value
    if not isinstance(lines, list) or not all(isinstance(v, str) for v in lines):
        raise UserError(f"[slurm] {key} must be a string or a list of strings")
    for line in lines:
        if CONTROL.search(line.replace("\t", " ")):
            raise UserError(f"[slurm] {key}: {line!r} contains a line break or control character; "
                            "write one list item per line")
    return tuple(lines)


def directive_words(line: str) -> list[str]:
    """The words ``sbatch`` reads from ``#SBATCH LINE``: split at white space outside quotes, ``'`` and ``"``
    quote, a backslash escapes the next character, an unquoted ``#`` starts a comment (as sbatch's own
    parser does). An unmatched quote is a ``ValueError`` (sbatch: "Unmatched quote")."""
    words, word, quote, escape, in_word = [], [], None, False, False
    for char in line:
        if escape:
            word.append(char)
            escape, in_word = False, True
        elif char == "\\":
            escape, in_word = True, True
        elif quote:
            if char == quote:
                quote = None
            else:
                word.append(char)
        elif char in "'\"":
            quote, in_word = char, True
        elif char == "#":
            break
        elif char.isspace():
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        else:
            word.append(char)
            in_word = True
    if quote:
        raise ValueError(f"unmatched {quote}")
    if in_word:
        words.append("".join(word))
    return words


def _sbatch_option(line: str) -> None:
    """One extra ``#SBATCH`` line must be one option, ``--name`` or ``--name=value``: sbatch refuses a second
    word it cannot tell is the option's value (``--exclusive user``: "Invalid directive found in batch
    script"), and a line that starts otherwise is not a directive at all."""
    example = "one option per item, written --name or --name=value (e.g. \"--exclusive=user\", \"--gres=gpu:4\")"
    try:
        words = directive_words(line)
    except ValueError as exc:
        raise UserError(f"[slurm] sbatch line {line!r} has an {exc} quote, which sbatch refuses; write {example}")
    if len(words) != 1 or not words[0].startswith("-") or words[0] in ("-", "--"):
        found = f" ({len(words)} words: {', '.join(map(repr, words))})" if len(words) > 1 else ""
        raise UserError(f"[slurm] sbatch lines are sbatch options, {example}; got {line!r}{found}")


def _container(value) -> str:
    usage = "[slurm] container must be one command prefix such as \"apptainer exec --nv image.sif\""
    if not isinstance(value, str) or CONTROL.search(value):
        raise UserError(f"{usage}, got {value!r}")
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise UserError(f"{usage}: {exc}") from None
    if not words:
        raise UserError(usage)
    return value


@dataclass
class SlurmOptions:
    """The ``[slurm]`` section of a sweep file, checked."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    nodes: int = 1
    gpus_per_task: int = 0
    gpus_per_node: int = 0
    gpu_type: str | None = None
    gpu_syntax: str = "gres"
    cpus_per_task: int | None = None
    mem: str | None = None
    max_concurrent: int | None = None
    sbatch: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    preamble: tuple[str, ...] = ()
    container: str | None = None
    python: str | None = None
    collect_time: str = "00:30:00"

    @classmethod
    def from_table(cls, table: dict) -> SlurmOptions:
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise UserError(f"unknown key(s) in [slurm]: {', '.join(unknown)}; known: {', '.join(known)}")
        t = dict(table)
        opts = cls()
        for key in ("partition", "account", "qos", "gpu_type"):
            if key in t:
                setattr(opts, key, _text(key, t[key], WORDS if key == "partition" else WORD))
        for key in ("time", "collect_time"):
            if key in t:
                setattr(opts, key, _text(key, t[key], TIME, '"02:00:00" or "1-00:00:00"'))
        if "mem" in t:
            opts.mem = _text("mem", t["mem"], MEM, '"64G"')
        opts.nodes = _int("nodes", t.get("nodes", 1), 1)
        opts.gpus_per_task = _int("gpus_per_task", t.get("gpus_per_task", 0), 0)
        opts.gpus_per_node = _int("gpus_per_node", t.get("gpus_per_node", 0), 0)
        if opts.gpus_per_task and opts.gpus_per_node and opts.gpus_per_task != opts.gpus_per_node:
            raise UserError(f"[slurm] gpus_per_task = {opts.gpus_per_task} and gpus_per_node = {opts.gpus_per_node}: "
                            "a point runs one task per node, so they are the same number; give one of them")
        if "cpus_per_task" in t:
            opts.cpus_per_task = _int("cpus_per_task", t["cpus_per_task"], 1)
        if "max_concurrent" in t:
            opts.max_concurrent = _int("max_concurrent", t["max_concurrent"], 1)
        opts.gpu_syntax = t.get("gpu_syntax", "gres")
        if opts.gpu_syntax not in GPU_SYNTAX:
            raise UserError(f"[slurm] gpu_syntax must be one of {', '.join(GPU_SYNTAX)} "
                            f"(--gres=gpu:N or --gpus=N), got {opts.gpu_syntax!r}")
        if "sbatch" in t:
            opts.sbatch = _lines("sbatch", t["sbatch"])
            for line in opts.sbatch:
                _sbatch_option(line)
        if "preamble" in t:
            opts.preamble = _lines("preamble", t["preamble"])
        env = t.get("env", {})
        if not isinstance(env, dict):
            raise UserError("[slurm] env must be a table of NAME = value")
        for name, value in env.items():
            if not ENV_NAME.fullmatch(name):
                raise UserError(f"[slurm] env: {name!r} is not a valid variable name")
            if isinstance(value, (dict, list)) or CONTROL.search(str(value)):
                raise UserError(f"[slurm] env {name}: expected one line of text, got {value!r}")
            opts.env[name] = str(value).lower() if isinstance(value, bool) else str(value)
        if "container" in t:
            opts.container = _container(t["container"])
        if "python" in t:
            opts.python = _text("python", t["python"])
            if CONTROL.search(opts.python) or not opts.python.startswith("/"):
                raise UserError(f"[slurm] python must be an absolute path, got {opts.python!r}")
        if opts.nodes > 1 and opts.container:
            raise UserError("[slurm] nodes > 1 with a container is not supported: the task calls srun to start "
                            "torchrun on every node, and srun runs outside the container; use python = \"...\" "
                            "(an environment on the shared file system) for multi-node sweeps")
        return opts

    @property
    def gpus(self) -> int:
        """GPUs each node gives a point (a point is one task per node)."""
        return self.gpus_per_node or self.gpus_per_task

    def launch_lines(self) -> str:
        """The array script's lines that a multi-node job needs before its task starts: the rendezvous
        endpoint, the first node of the job at a port from the job id (none for one node)."""
        if self.nodes == 1:
            return ""
        return (f"# {self.nodes} nodes: the task starts torchrun on each (srun), meeting at the first node\n"
                f'export {RDZV_ENV}="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):'
                f'$(( {RDZV_PORT_BASE} + SLURM_JOB_ID % {RDZV_PORT_SPAN} ))"\n')

    def directives(self, name: str, collect: bool = False) -> list[str]:
        """The ``#SBATCH`` lines of the array script, or of the collect job (no GPUs, its own time)."""
        if not WORD.fullmatch(name):
            raise UserError(f"sweep name {name!r} must be letters, digits, '_', '.', '+' or '-'")
        lines = [f"--job-name={name}-collect" if collect else f"--job-name={name}"]
        for key in ("partition", "account", "qos"):
            if getattr(self, key):
                lines.append(f"--{key}={getattr(self, key)}")
        time = self.collect_time if collect else self.time
        if time:
            lines.append(f"--time={time}")
        if collect or self.nodes == 1:
            lines += ["--nodes=1", "--ntasks=1"]
        else:  # one task per node: the task on the first starts torchrun on every node with srun
            lines += [f"--nodes={self.nodes}", "--ntasks-per-node=1"]
        if self.cpus_per_task:
            lines.append(f"--cpus-per-task={self.cpus_per_task}")
        if not collect:
            if self.gpus:
                gpus = f"{self.gpu_type}:{self.gpus}" if self.gpu_type else str(self.gpus)
                if self.gpu_syntax == "gres":  # --gres counts per node
                    lines.append(f"--gres=gpu:{gpus}")
                else:  # --gpus counts for the whole job
                    total = self.gpus * self.nodes
                    lines.append(f"--gpus={self.gpu_type}:{total}" if self.gpu_type else f"--gpus={total}")
            if self.mem:
                lines.append(f"--mem={self.mem}")
            lines += self.sbatch
        return [f"#SBATCH {line}" for line in lines]


def render(kind: str, name: str, command: list[str], opts: SlurmOptions, manifest: Path, script: Path) -> str:
    """The ``array`` or ``collect`` script; ``command`` is the llmbench call (argv, quoted here)."""
    prefix = shlex.split(opts.container) if opts.container else []
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in opts.env.items())
    template = Template((TEMPLATES / f"{kind}.sbatch").read_text())
    return template.substitute(
        directives="\n".join(opts.directives(name, collect=kind == "collect")),
        name=name,
        manifest=manifest,
        script=script,
        preamble="".join(line + "\n" for line in opts.preamble),
        exports=exports,
        launch=opts.launch_lines() if kind == "array" else "",
        command=" ".join(shlex.quote(word) for word in [*prefix, *command]),
    )


@dataclass(frozen=True)
class ArrayChunk:
    offset: int
    indices: tuple[int, ...]

    def spec(self, max_concurrent: int | None = None) -> str:
        """``--array`` value: ranges of ``index - offset``, e.g. ``0-3,7%2``."""
        parts, start, prev = [], None, None
        for i in (i - self.offset for i in self.indices):
            if start is None:
                start = prev = i
            elif i == prev + 1:
                prev = i
            else:
                parts.append(f"{start}-{prev}" if prev > start else str(start))
                start = prev = i
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        return ",".join(parts) + (f"%{max_concurrent}" if max_concurrent else "")


def array_chunks(indices, max_array_size: int) -> list[ArrayChunk]:
    """Cut point indices into arrays whose task ids (index - offset) stay below ``max_array_size``."""
    chunks, current = [], []
    for i in sorted(set(indices)):
        if current and i - current[0] >= max_array_size:
            chunks.append(ArrayChunk(current[0], tuple(current)))
            current = []
        current.append(i)
    if current:
        chunks.append(ArrayChunk(current[0], tuple(current)))
    return chunks


def max_array_size() -> int:
    """The cluster's MaxArraySize from ``scontrol show config`` (SLURM's default when it cannot be read)."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                             timeout=SBATCH_TIMEOUT_S, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return DEFAULT_MAX_ARRAY_SIZE
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(found.group(1)) if found else DEFAULT_MAX_ARRAY_SIZE


def array_command(script: Path, chunk: ArrayChunk, max_concurrent: int | None, log_dir: Path) -> list[str]:
    return ["sbatch", "--parsable", f"--array={chunk.spec(max_concurrent)}",
            f"--output={log_dir}/slurm-%A_%a.out", str(script), str(chunk.offset)]


def collect_command(script: Path, job_ids: list[str], log_dir: Path) -> list[str]:
    return ["sbatch", "--parsable", f"--dependency=afterany:{':'.join(job_ids)}",
            f"--output={log_dir}/collect-%j.out", str(script)]


def submit(command: list[str]) -> str:
    """Run one ``sbatch --parsable`` command; returns the job id."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=SBATCH_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise UserError("sbatch not found: submit from a SLURM login node, or run the sweep here with "
                        "`llmbench sweep run`") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"sbatch did not answer within {SBATCH_TIMEOUT_S} s; is the controller up?") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise UserError(f"sbatch refused the job: {lines[-1] if lines else f'exit code {result.returncode}'}")
    job_id = result.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise UserError(f"sbatch answered {result.stdout.strip()!r} instead of a job id")
    return job_id


def spec_indices(spec: str) -> list[int]:
    """The array task ids of an ``--array`` value such as ``0-3,7%2`` (the inverse of ``ArrayChunk.spec``)."""
    ids = []
    for part in spec.split("%")[0].split(","):
        first, _, last = part.partition("-")
        ids += range(int(first), int(last or first) + 1)
    return ids


def queue(job_ids) -> set[str] | None:
    """What ``squeue`` still lists of these jobs (pending, running, completing: finished ones are not
    listed), one entry per job (``"104"``) and per array task (``"101_3"``, pending ones too); an empty
    set once every one has left the queue; ``None`` when it cannot tell (no squeue, no controller)."""
    job_ids = sorted({str(j) for j in job_ids if str(j).isdigit()}, key=int)
    if not job_ids:
        return set()
    try:
        result = subprocess.run(["squeue", "--noheader", "--array", "--format=%i", f"--jobs={','.join(job_ids)}"],
                                capture_output=True, text=True, timeout=SBATCH_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        # every job id unknown to the controller (long finished, purged): none of them is in the queue
        return set() if "invalid job id" in result.stderr.lower() else None
    return {line.strip() for line in result.stdout.splitlines() if line.strip()}


def queued(job_ids: list[str]) -> list[str]:
    """Which of these jobs (or any of their array tasks) ``squeue`` still lists; none when it cannot tell."""
    listed = {entry.split("_")[0] for entry in queue(job_ids) or ()}
    return [job_id for job_id in job_ids if job_id in listed]
