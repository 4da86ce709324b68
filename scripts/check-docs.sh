#!/usr/bin/env bash
# Checks the documentation against the repository and the CLI (CI runs it right after
# scripts/test.sh, which builds the CLI it needs):
#
#   bash scripts/check-docs.sh
#
# 1. Links: every relative link in README.md, CONTRIBUTING.md and docs/**/*.md resolves to an
#    existing file or folder, and every `#anchor` into a Markdown file (or the same file) names
#    one of its headings, with GitHub's slugs (lower case, punctuation dropped, spaces -> `-`,
#    `-1`, `-2`... for repeats).
# 2. Commands: every `emcoder <subcommand> ...` line (also `target/release/emcoder ...`) and
#    every `cargo run ... -p emcoder-cli -- <subcommand> ...` line in the fenced code blocks of
#    those files names a subcommand the CLI has, and each of its flags appears in
#    `$EMCODER_BIN <subcommand> --help` (EMCODER_BIN: default target/debug/emcoder).
# 3. The README's performance figures (`1.29x`, `99.866%`, ...) each appear in
#    benches/RESULTS.md, where they were measured.
#
# Prints what it checked; exits 1 listing every broken link, command or figure (or when the
# binary is missing). Needs bash and python3 (standard library only).
set -euo pipefail
BIN=${EMCODER_BIN:-target/debug/emcoder}
# A relative EMCODER_BIN is relative to the caller's folder; the default to the repository.
if [[ -n ${EMCODER_BIN:-} && $BIN != /* ]]; then
    BIN=$PWD/$BIN
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec python3 - "$BIN" <<'PY'
import os
import re
import subprocess
import sys
import urllib.parse

BIN = sys.argv[1]
ROOT = os.getcwd()
problems = []


def rel(p):
    return os.path.relpath(p, ROOT)


def doc_files():
    files = [f for f in ("README.md", "CONTRIBUTING.md") if os.path.isfile(f)]
    for d, dirs, names in os.walk("docs"):
        dirs.sort()
        files += [os.path.join(d, n) for n in sorted(names) if n.endswith(".md")]
    return files


def split_fences(text):
    """Yields (kind, lang, start_line, lines): kind 'text' or 'code'."""
    lines = text.split("\n")
    out, cur, start, fence, lang = [], [], 1, None, ""
    for i, line in enumerate(lines, 1):
        m = re.match(r"^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)", line)
        if fence is None and m:
            out.append(("text", "", start, cur))
            fence, lang, cur, start = m.group(1), m.group(2).lower(), [], i + 1
        elif fence is not None and re.match(r"^ {0,3}" + re.escape(fence[0]) + "{%d,}\\s*$" % len(fence), line):
            out.append(("code", lang, start, cur))
            fence, cur, start = None, [], i + 1
        else:
            cur.append(line)
    out.append(("code" if fence else "text", lang if fence else "", start, cur))
    return out


# ---------------------------------------------------------------- headings and anchors

def slug(heading):
    t = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    t = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", t)
    t = re.sub(r"<[^>]+>", "", t)
    t = t.replace("`", "").replace("*", "")
    t = t.strip().lower()
    t = re.sub(r"[^\w\- ]", "", t)
    return t.replace(" ", "-")


_anchors = {}


def anchors(path):
    if path not in _anchors:
        seen, result = {}, set()
        with open(path, encoding="utf-8") as f:
            blocks = split_fences(f.read())
        for kind, _, _, lines in blocks:
            if kind != "text":
                continue
            prev = ""
            for line in lines:
                m = re.match(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
                text = None
                if m:
                    text = m.group(1)
                elif re.match(r"^ {0,3}(=+|-+)\s*$", line) and prev.strip() and not prev.lstrip().startswith(("|", "-", "*", ">")):
                    text = prev.strip()
                if text is not None:
                    s = slug(text)
                    n = seen.get(s, 0)
                    seen[s] = n + 1
                    result.add(s if n == 0 else f"{s}-{n}")
                prev = line
        _anchors[path] = result
    return _anchors[path]


# ---------------------------------------------------------------- 1. links

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")


def check_links(files):
    count = 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            blocks = split_fences(f.read())
        for kind, _, start, lines in blocks:
            if kind != "text":
                continue
            for off, line in enumerate(lines):
                lineno = start + off
                bare = re.sub(r"(`+)(?:(?!\1).)+?\1", "", line)  # drop code spans
                targets = [m.group(1) for m in LINK.finditer(bare)]
                m = REFDEF.match(bare)
                if m:
                    targets.append(m.group(1))
                for target in targets:
                    if not target or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target) or target.startswith("//"):
                        continue
                    count += 1
                    where = f"{path}:{lineno}"
                    file_part, _, anchor = target.partition("#")
                    file_part = urllib.parse.unquote(file_part)
                    if file_part:
                        base = ROOT if file_part.startswith("/") else os.path.dirname(os.path.join(ROOT, path))
                        dest = os.path.normpath(os.path.join(base, file_part.lstrip("/")))
                        if not (dest == ROOT or dest.startswith(ROOT + os.sep)):
                            problems.append(f"{where}: link '{target}' leaves the repository")
                            continue
                        if not os.path.exists(dest):
                            problems.append(f"{where}: broken link '{target}': {rel(dest)} does not exist")
                            continue
                    else:
                        dest = os.path.join(ROOT, path)
                    if anchor and os.path.isfile(dest) and dest.endswith(".md"):
                        if urllib.parse.unquote(anchor).lower() not in anchors(dest):
                            problems.append(f"{where}: broken anchor '{target}': no heading "
                                            f"'#{anchor}' in {rel(dest)}")
    return count


# ---------------------------------------------------------------- 2. commands

SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", "$("}
WRAPPERS = {"time", "nohup", "env", "exec", "command", "sudo"}
SHELL_LANGS = {"", "sh", "bash", "shell", "console", "text", "zsh"}


def tokenize(line):
    """Shell-like words: (text, quoted) pairs and operator strings; stops at a comment."""
    toks, i, n = [], 0, len(line)
    while i < n:
        c = line[i]
        if c.isspace():
            i += 1
            continue
        if c == "#":
            break
        if line.startswith(("&&", "||", "$("), i):
            toks.append(line[i:i + 2])
            i += 2
            continue
        if c in ";()&":
            toks.append(c)
            i += 1
            continue
        if c == "|" and (i + 1 >= n or line[i + 1].isspace()):
            # `[--tolerance E | --decide A]` in a synopsis: an alternative, not a pipe.
            rest = line[i + 1:].lstrip()
            toks.append(("|", False) if rest.startswith("-") else "|")
            i += 1
            continue
        word, quoted = "", False
        while i < n and not line[i].isspace() and line[i] not in ";()&":
            if line[i] in "'\"":
                q = line[i]
                j = line.find(q, i + 1)
                j = n if j < 0 else j
                word += line[i + 1:j]
                quoted = True
                i = j + 1
            elif line[i] == "|" and (i + 1 >= n or line[i + 1].isspace()):
                break
            else:
                word += line[i]
                i += 1
        toks.append((word, quoted))
    return toks


def commands(toks):
    cmd = []
    for t in toks:
        if isinstance(t, str) and t in SEPARATORS:
            if cmd:
                yield cmd
            cmd = []
        else:
            cmd.append(t)
    if cmd:
        yield cmd


def emcoder_invocation(cmd):
    """(words after the program, how it was called) when cmd runs the emcoder CLI, else None."""
    words = list(cmd)
    while words and not words[0][1] and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0][0]) or words[0][0] in WRAPPERS):
        words.pop(0)
    if words and words[0][0] == "nice":
        words.pop(0)
        if words and words[0][0] == "-n":
            words = words[2:]
        elif words and re.match(r"^-\d+$", words[0][0]):
            words.pop(0)
    if not words or words[0][1]:
        return None
    prog = words[0][0]
    if os.path.basename(prog) == "emcoder":
        return words[1:], prog
    if prog == "cargo" and len(words) > 1 and words[1][0] == "run":
        names = [w[0] for w in words]
        runs_cli = any(names[k] in ("-p", "--package", "--bin") and k + 1 < len(names)
                       and names[k + 1] in ("emcoder-cli", "emcoder") for k in range(len(names)))
        runs_cli |= any(w in ("-p=emcoder-cli", "--package=emcoder-cli", "--bin=emcoder") for w in names)
        if runs_cli:
            if "--" in names:
                return words[names.index("--") + 1:], "cargo run -p emcoder-cli --"
            return [], "cargo run -p emcoder-cli --"
    return None


_help = {}


def help_text(sub):
    if sub not in _help:
        args = [BIN] + ([sub] if sub else []) + ["--help"]
        try:
            r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
            _help[sub] = (r.returncode, r.stdout + r.stderr)
        except OSError as e:
            _help[sub] = (127, str(e))
    return _help[sub]


def subcommands():
    rc, text = help_text("")
    subs, inside = set(), False
    for line in text.splitlines():
        if re.match(r"^(Commands|Subcommands):", line):
            inside = True
        elif inside and re.match(r"^\S", line):
            inside = False
        elif inside:
            m = re.match(r"^\s+([a-z][a-z0-9-]*)\s", line + " ")
            if m:
                subs.add(m.group(1))
    return subs


def flag_in(flag, text):
    if flag.startswith("--"):
        return re.search(r"(?<![\w-])" + re.escape(flag) + r"(?![\w-])", text) is not None
    return re.search(r"(?<![\w-])" + re.escape(flag) + r"(?=[,\s])", text) is not None


def check_commands(files, log):
    count = 0
    subs = subcommands()
    for path in files:
        with open(path, encoding="utf-8") as f:
            blocks = split_fences(f.read())
        for kind, lang, start, lines in blocks:
            if kind != "code" or lang not in SHELL_LANGS:
                continue
            # Logical lines: backslash continuations, and the indented `[--flag ...]` lines of
            # a synopsis that continue an emcoder line.
            logical, prev_is_cli = [], False
            for off, line in enumerate(lines):
                stripped = line.strip()
                if re.sub(r"^\$\s+", "", stripped).startswith(("[", "-")) and line[:1].isspace() and logical and prev_is_cli:
                    logical[-1][1] += " " + stripped
                    continue
                if logical and logical[-1][1].endswith("\\"):
                    logical[-1][1] = logical[-1][1][:-1] + " " + stripped
                    continue
                logical.append([start + off, re.sub(r"^\$\s+", "", stripped)])
                prev_is_cli = any(emcoder_invocation(c) for c in commands(tokenize(logical[-1][1])))
            for lineno, text in logical:
                for cmd in commands(tokenize(text)):
                    inv = emcoder_invocation(cmd)
                    if inv is None:
                        continue
                    count += 1
                    rest, how = inv
                    where = f"{path}:{lineno}"
                    bad = []
                    if not rest or (rest[0][0].startswith("-") and not rest[0][1]):
                        sub, args = "", rest
                    else:
                        sub, args = rest[0][0], rest[1:]
                        if sub not in subs or help_text(sub)[0] != 0:
                            problems.append(f"{where}: `{how} {sub}`: no such subcommand "
                                            f"(the CLI has: {', '.join(sorted(subs))})")
                            log.append(f"  FAIL {where}: {how} {sub}")
                            continue
                    flags = []
                    for word, quoted in args:
                        if quoted:
                            continue
                        if word == "--":
                            break
                        w = word.strip("[]")
                        m = re.match(r"^(--[A-Za-z0-9][A-Za-z0-9-]*)(?:=.*)?$", w) or re.match(r"^(-[A-Za-z])$", w)
                        if m:
                            flags.append(m.group(1))
                    help_ = help_text(sub)[1]
                    for fl in flags:
                        if not flag_in(fl, help_):
                            bad.append(fl)
                    shown = f"{how} {sub}".strip() + ("" if not flags else " " + " ".join(dict.fromkeys(flags)))
                    if bad:
                        what = f"`emcoder {sub} --help`" if sub else "`emcoder --help`"
                        problems.append(f"{where}: `{how} {sub}`: {', '.join(bad)} not in {what}")
                        log.append(f"  FAIL {where}: {shown}")
                    else:
                        log.append(f"  ok   {where}: {shown}")
    return count


# ---------------------------------------------------------------- 3. performance figures

def check_figures():
    try:
        readme = open("README.md", encoding="utf-8").read()
        results = open("benches/RESULTS.md", encoding="utf-8").read()
    except OSError as e:
        problems.append(f"performance figures: {e}")
        return 0
    m = re.search(r"^## Performance[^\n]*\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if not m:
        return 0
    figures = sorted(set(re.findall(r"(?<![\w.])\d+(?:\.\d+)?[x%](?!\w)", m.group(1))))
    for fig in figures:
        if fig not in results:
            problems.append(f"README.md, Performance: {fig} does not appear in benches/RESULTS.md")
    return len(figures)


files = doc_files()
print(f"==> links in {len(files)} files: {', '.join(files)}")
n_links = check_links(files)
print(f"    {n_links} relative links checked")
print("==> README performance figures against benches/RESULTS.md")
print(f"    {check_figures()} figures checked")
print(f"==> emcoder command lines in code blocks, against {rel(BIN) if BIN.startswith(ROOT) else BIN}")
if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
    problems.append(f"EMCODER_BIN={BIN}: no such executable. Build the CLI first (cargo build -p emcoder-cli, "
                    f"or bash scripts/test.sh), or point EMCODER_BIN at an emcoder binary.")
elif help_text("")[0] != 0:
    problems.append(f"{BIN} --help failed: {help_text('')[1].strip()[:200]}")
else:
    log = []
    n_cmds = check_commands(files, log)
    print("\n".join(log))
    print(f"    {n_cmds} command lines checked")
if problems:
    print(f"\ncheck-docs: {len(problems)} problem(s):", file=sys.stderr)
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    sys.exit(1)
print("check-docs: all links, figures and commands are fine")
PY
