"""What superv knows about each kind of agent: its name, its markers, how to resume it.

One place for every per-agent fact that is code rather than data (the screen rules are
data: :mod:`agent_worker.activity.rules`):

- which kind a command is (``--agent auto``: from the command's basename, after ``env``,
  ``npx`` and similar wrappers);
- the environment variables an agent sets for the programs it starts (its *session
  markers*), which must never reach an agent superv starts: Claude Code with an inherited
  ``CLAUDE_CODE_CHILD_SESSION=1`` silently saves no transcript, so it can never resume;
- how to continue a recorded conversation (``claude --resume ID``, ``codex resume ID``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

KINDS = ("claude", "codex", "aider", "gemini", "opencode", "generic")
CHOICES = (*KINDS, "auto")

# Executable basenames and npm package names of each kind.
_NAMES = {
    "claude": "claude", "claude.exe": "claude", "@anthropic-ai/claude-code": "claude",
    "codex": "codex", "@openai/codex": "codex",
    "aider": "aider", "aider-chat": "aider",
    "gemini": "gemini", "@google/gemini-cli": "gemini",
    "opencode": "opencode", "opencode-ai": "opencode",
}
# Programs that run another one: the agent is further along the command line.
_WRAPPERS = {"env", "npx", "bunx", "pnpx", "uvx", "pipx", "nice", "nohup", "time", "exec",
             "stdbuf", "ionice", "taskset", "timeout", "node", "bun", "deno", "python",
             "python3", "uv", "npm", "pnpm", "yarn", "sudo"}
# Sub-commands of wrappers that are not the agent: ``npm exec X``, ``pipx run X``, ``uv run X``.
_WRAPPER_VERBS = {"exec", "run", "x", "dlx", "tool"}

# Session markers: set by an agent (or by what runs it) for the programs it starts.
# Claude Code 2.1.197 sets CLAUDECODE, CLAUDE_CODE_SESSION_ID, CLAUDE_CODE_CHILD_SESSION,
# AI_AGENT and CLAUDE_EFFORT for its Bash tool (read from its bundled cli), CLAUDE_PROJECT_DIR
# and CLAUDE_ENV_FILE for hooks, CLAUDE_CODE_SSE_PORT for an IDE link.  Never here: user
# settings such as ANTHROPIC_*, CLAUDE_CODE_USE_BEDROCK, OPENAI_*.
MARKERS = frozenset({
    "CLAUDECODE", "CLAUDE_CODE_CHILD_SESSION", "CLAUDE_CODE_SESSION_ID",
    "CLAUDE_CODE_ENTRYPOINT", "CLAUDE_CODE_EXECPATH", "CLAUDE_PID", "CLAUDE_ENV_FILE",
    "CLAUDE_PROJECT_DIR", "CLAUDE_CODE_SSE_PORT", "CLAUDE_EFFORT", "AI_AGENT",
    "CLAUDE_CODE_REMOTE_SESSION_ID", "CLAUDE_BRIDGE_REATTACH_SESSION",
    "CODEX_THREAD_ID", "CODEX_SESSION_ID", "CODEX_MANAGED_BY_NPM", "CODEX_MANAGED_BY_BUN",
    "GEMINI_CLI", "OPENCODE", "OPENCODE_SESSION_ID",
})
MARKER_PREFIXES = ("CODEX_SANDBOX",)  # CODEX_SANDBOX, CODEX_SANDBOX_NETWORK_DISABLED, ...


def is_marker(key: str) -> bool:
    return key in MARKERS or key.startswith(MARKER_PREFIXES)


def markers_in(env: Mapping[str, str]) -> list[str]:
    """The session markers present in ``env``, sorted (for doctor and for tests)."""
    return sorted(k for k in env if is_marker(k))


def without_markers(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not is_marker(k)}


def program_index(argv: list[str]) -> int:
    """Where the agent's own executable is in ``argv``, after wrappers; 0 if there are none.

    ``env A=1 npx -y @anthropic-ai/claude-code --model x`` -> 3.
    """
    i = 0
    while i < len(argv):
        word = argv[i]
        base = os.path.basename(word)
        if i > 0 and (word.startswith("-") or ("=" in word and not word.startswith("/"))):
            i += 1  # a wrapper's option or env's VAR=value
            continue
        if base in _WRAPPERS or (i > 0 and word in _WRAPPER_VERBS):
            i += 1
            continue
        return i
    return 0


def _kind_of_word(word: str) -> str | None:
    if word.startswith("@"):  # an npm package, maybe with a version: @scope/name@1.2
        scope, _, rest = word.partition("/")
        base = f"{scope}/{rest.split('@', 1)[0]}"
    else:
        base = os.path.basename(word).split("@", 1)[0]
    return _NAMES.get(base) or _NAMES.get(base.split(".", 1)[0])


def detect(argv: list[str]) -> str:
    """The kind of agent ``argv`` runs (``generic`` when it is none we know)."""
    if not argv:
        return "generic"
    return _kind_of_word(argv[program_index(argv)]) or "generic"


def resolve(requested: str | None, argv: list[str]) -> str:
    """The kind for ``--agent requested`` (None or ``auto``: detected); ValueError if unknown."""
    if requested in (None, "", "auto"):
        return detect(argv)
    if requested not in KINDS:
        raise ValueError(f"--agent {requested!r}: use one of {', '.join(CHOICES)}")
    return requested


# Options that choose a conversation, per kind (how many values each takes: a 1 may also
# stand alone, as a picker): a resume replaces them.  Checked against each CLI's own
# documentation:
# - Claude Code: ``--resume/-r [ID]``, ``--session-id ID``, ``--continue/-c``,
#   ``--fork-session`` (``claude --help``, 2.1.197 here);
# - Gemini CLI: ``--resume/-r [latest|INDEX|UUID]`` (geminicli.com/docs/cli/session-management:
#   "Resume by ID: You can also provide the full session UUID");
# - opencode: ``--session/-s ID``, ``--continue/-c``, ``--fork`` (opencode.ai/docs/cli, the
#   default TUI command's flags).
_CONVERSATION_OPTIONS = {
    "claude": {"--resume": 1, "-r": 1, "--session-id": 1, "--continue": 0, "-c": 0,
               "--fork-session": 0},
    "gemini": {"--resume": 1, "-r": 1},
    "opencode": {"--session": 1, "-s": 1, "--continue": 0, "-c": 0, "--fork": 0},
}
# How each of those continues conversation ID: the words that go right after the program.
_RESUME_WORDS = {"claude": ("--resume",), "gemini": ("--resume",), "opencode": ("--session",)}


# Codex options that take a value (``codex --help``).
_CODEX_VALUE_OPTIONS = {"-m", "--model", "-c", "--config", "-p", "--profile", "-s", "--sandbox",
                        "-a", "--ask-for-approval", "-C", "--cd", "-i", "--image", "--add-dir",
                        "--enable", "--disable", "--local-provider"}


def _without_options(words: list[str], options: dict[str, int]) -> list[str]:
    """``words`` without ``options`` (and their values)."""
    kept: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        name = word.split("=", 1)[0]
        if name in options:
            takes = options[name] and "=" not in word
            # ``--resume`` may stand alone (a picker); take its value only if it has one.
            if takes and i + 1 < len(words) and not words[i + 1].startswith("-"):
                i += 1
            i += 1
            continue
        kept.append(word)
        i += 1
    return kept


def resume_argv(kind: str, argv: list[str], conversation_id: str) -> list[str] | None:
    """The command that continues conversation ``conversation_id``; None if ``kind`` has none.

    The session's other arguments stay (a first prompt too, which the agent is then sent
    again), except Codex's prompt: ``codex resume`` takes the thread's own.
    """
    at = program_index(argv)
    head, rest = argv[: at + 1], argv[at + 1 :]
    if kind in _RESUME_WORDS:
        kept = _without_options(rest, _CONVERSATION_OPTIONS[kind])
        return [*head, *_RESUME_WORDS[kind], conversation_id, *kept]
    if kind == "codex":
        # ``codex [OPTIONS] [PROMPT]`` becomes ``codex resume SESSION_ID [OPTIONS]``: the
        # resume sub-command takes the same TUI options (codex-rs/cli/src/main.rs,
        # ResumeCommand flattens TuiCli); the first turn's prompt does not stay (the thread
        # already holds it).
        options: list[str] = []
        i = 0
        while i < len(rest):
            word = rest[i]
            if word.startswith("-"):
                options.append(word)
                if word in _CODEX_VALUE_OPTIONS and i + 1 < len(rest):
                    options.append(rest[i + 1])
                    i += 1
            i += 1
        return [*head, "resume", conversation_id, *options]
    return None  # aider, generic: no conversation to name (aider's is its chat history file)
