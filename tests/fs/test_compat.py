"""Programs that work on an ext4 folder work on the mount.

One table of cases: each names a program, a bash command run from the
mount's top (and, for the exit status to compare with, from a local
folder holding a copy of the same environment), and what to read back
through the mount afterwards: the spec, field files, the number of new
revisions in history/, and that the folder holds no leftover file.
A case with `errno` is a deliberate difference: the program must fail,
naming that errno's message, where on ext4 it succeeds; docs/
compatibility.md lists them with the reason.

`tail -f`, `less +F` and poll(2) are not here: they wait for changes
and have tests of their own.
"""
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field

import pytest

from conftest import have, read, revisions, wait_for

SPEC = "accelerator = cpu\nnodes = 2\n"
NEW = "accelerator = cpu\nnodes = 4\n"
R = "dev/pools/train"

# Drives a full-screen program through a pseudo-terminal: waits for it
# to draw, types the keys, and exits with its exit status.
PTY = r"""
import os, pty, select, sys, time
keys = sys.argv[1].encode().decode("unicode_escape").encode()
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm"
    os.execvp(sys.argv[2], sys.argv[2:])
def drain(quiet, most):
    # Reads until the program has drawn, then been quiet a while.
    end, seen = time.monotonic() + most, False
    while time.monotonic() < end:
        if not select.select([fd], [], [], quiet)[0]:
            if seen:
                return
            continue
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return
        seen = True
drain(0.5, 30)
for ch in keys:
    os.write(fd, bytes([ch]))
    drain(0.02, 0.2)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class Case:
    id: str
    needs: tuple
    cmd: str
    out: str = None          # a substring of stdout
    spec: str = None         # the spec read back
    fields: dict = field(default_factory=dict)
    copy: str = None         # the spec of dev/pools/copy read back
    env: str = None          # an environment that must equal dev
    revs: int = 0            # new revisions of dev
    errno: str = None        # a deliberate difference: this message
    rc: int = 0              # expected exit status (on ext4 too)


def c(id, needs, cmd, **kw):
    if isinstance(needs, str):
        needs = (needs,)
    return Case(id, needs, cmd, **kw)


VIM = "vim -Nu NONE -i NONE -es -c '{set}' -c '%s/nodes = 2/nodes = 4/' " \
      "-c wq " + R + "/spec"
EMACS = ("emacs --batch -Q " + R + "/spec --eval '(progn {set} "
         "(goto-char (point-min)) (search-forward \"nodes = 2\") "
         "(replace-match \"nodes = 4\") (save-buffer))'")
NODE = ("node -e \"const fs = require('fs'); "
        "const s = fs.readFileSync('" + R + "/spec', 'utf8'); "
        "fs.writeFileSync('" + R + "/spec', s.replace('2', '4'))\"")
MMAP = ("python3 -c \"import mmap, os; fd = os.open('" + R + "/spec', "
        "os.O_RDONLY); m = mmap.mmap(fd, os.fstat(fd).st_size, "
        "mmap.MAP_SHARED, mmap.PROT_READ); print(m[:].decode(), end='')\"")
FILEINPUT = ("python3 -c \"import fileinput\n"
             "for line in fileinput.input('" + R + "/spec', inplace=True):\n"
             "    print(line.replace('2', '4'), end='')\"")
PY = "python3 -c \"{}\""
SIZES = ("find . -type f ! -path ./metrics | while read -r f; do "
         "s=$(ls -ln \"$f\" | awk '{print $5}'); w=$(wc -c < \"$f\"); "
         "[ \"$s\" = \"$w\" ] || echo \"$f: ls $s, wc $w\"; done")

CASES = [
    # ---- readers ----
    c("cat", "cat", f"cat {R}/spec", out=SPEC),
    c("head", "head", f"head -n 1 {R}/spec", out="accelerator = cpu\n"),
    c("tail", "tail", f"tail -n 1 {R}/spec", out="nodes = 2\n"),
    c("less", "less", f"LESS=-F PAGER=cat less {R}/spec", out=SPEC),
    c("grep-r", "grep", "grep -r 'nodes = 2' dev",
      out=f"{R}/spec:nodes = 2"),
    c("rg", "rg", "rg -uuu --sort path 'nodes = 2' dev",
      out=f"{R}/spec:nodes = 2"),
    c("find", "find", "find dev -name spec", out=f"{R}/spec\n"),
    c("tree", "tree", "tree dev", out="status.json"),
    c("ls-l-sizes", "ls", SIZES, out=""),
    c("stat", "stat", f"stat -c '%s %F' {R}/spec", out="28 regular file"),
    c("file", "file", f"file -b {R}/spec {R}/status", out="ASCII text"),
    c("du", "du", "du -s dev", out="dev"),
    c("awk", "awk", f"awk -F' = ' '$1 == \"nodes\" {{print $2}}' {R}/spec",
      out="2\n"),
    c("diff-r", ("rsync", "diff"), f"rsync -a {R}/ T/pool/ && "
      f"diff -r {R} T/pool"),
    c("git-diff-no-index", "git",
      f"git diff --no-index T/new.spec {R}/spec", rc=1,
      out="-nodes = 4\n+nodes = 2"),
    c("jq-read", "jq", f"jq -r .spec.nodes {R}/status.json", out="2\n"),
    c("python-mmap", "python3", MMAP, out=SPEC),
    c("flock", "flock", f"flock {R}/spec cat {R}/spec", out=SPEC),
    c("watch", "watch", f"TERM=dumb timeout 1 watch -n 0.1 cat {R}/state",
      rc=124),
    c("watch-g", "watch", f"(sleep 0.5; echo 'nodes = 4' >> {R}/spec) & "
      f"TERM=dumb timeout 20 watch -g -n 0.1 cat {R}/spec >/dev/null; "
      "rc=$?; wait; exit $rc", fields={"nodes": "4\n"}, revs=1),
    # ---- editors and in-place rewriters ----
    c("sed-i", "sed", f"sed -i 's/nodes = 2/nodes = 4/' {R}/spec",
      spec=NEW, revs=1),
    c("perl-pi", "perl", f"perl -pi -e 's/nodes = 2/nodes = 4/' {R}/spec",
      spec=NEW, revs=1),
    c("ed", "ed", f"printf ',s/nodes = 2/nodes = 4/\\nw\\nq\\n' | "
      f"ed -s {R}/spec", spec=NEW, revs=1),
    c("vim-backup-writebackup", "vim", VIM.format(set="set backup "
      "writebackup"), spec=NEW, revs=1),
    c("vim-backupcopy-no", "vim", VIM.format(set="set backupcopy=no"),
      spec=NEW, revs=1),
    c("vim-swapfile", "vim", VIM.format(set="set swapfile directory=."),
      spec=NEW, revs=1),
    c("nano", "nano", f"python3 -c '{PTY}' 'labels.team = nlp\\r\\x0f\\r"
      f"\\x18' nano --ignorercfiles {R}/spec",
      spec="labels.team = nlp\n" + SPEC, revs=1),
    c("nano-backup", "nano", f"python3 -c '{PTY}' 'labels.team = nlp\\r"
      f"\\x0f\\r\\x18' nano --ignorercfiles --backup {R}/spec",
      spec="labels.team = nlp\n" + SPEC, revs=1),
    c("emacs-batch", "emacs", EMACS.format(set=""), spec=NEW, revs=1),
    c("emacs-batch-backup-by-rename", "emacs", EMACS.format(
      set="(setq backup-by-copying nil)"), spec=NEW, revs=1),
    c("sponge", "sponge", f"sed 's/2/4/' {R}/spec | sponge {R}/spec",
      spec=NEW, revs=1),
    c("tee", "tee", f"printf '{NEW}' | tee {R}/spec >/dev/null",
      spec=NEW, revs=1),
    c("tee-a", "tee", f"echo 'labels.team = nlp' | tee -a {R}/spec",
      spec=SPEC + "labels.team = nlp\n", revs=1),
    c("dd", "dd", f"printf '{NEW}' | dd of={R}/spec status=none",
      spec=NEW, revs=1),
    c("dd-notrunc", "dd", f"printf 'nodes = 4\\n' | dd of={R}/spec "
      "bs=1 seek=18 conv=notrunc status=none", spec=NEW, revs=1),
    c("truncate", "truncate", f"truncate -s 18 {R}/spec",
      spec="accelerator = cpu\n", revs=1),
    c("truncate-grow", "truncate", f"truncate -s 64 {R}/spec",
      spec=SPEC, errno="Invalid argument", rc=1),
    c("printf-append", "bash", f"printf 'labels.team = nlp\\n' >> {R}/spec",
      spec=SPEC + "labels.team = nlp\n", revs=1),
    c("field-file", "bash", f"echo 4 > {R}/nodes", spec=NEW, revs=1),
    c("jq-tmp-mv", "jq", f"jq -r '.spec | to_entries[] | "
      f"\"\\(.key) = \\(.value)\"' {R}/status.json | sed s/2/4/ > "
      f"{R}/spec.tmp && mv {R}/spec.tmp {R}/spec", spec=NEW, revs=1),
    c("patch", ("diff", "patch"), f"diff -u {R}/spec T/new.spec > T/p.diff;"
      f" patch -s {R}/spec < T/p.diff", spec=NEW, revs=1),
    c("python-open", "python3", PY.format(
      f"open('{R}/spec', 'w').write('''{NEW}''')"), spec=NEW, revs=1),
    c("python-pathlib", "python3", PY.format(
      f"import pathlib; p = pathlib.Path('{R}/spec'); "
      "p.write_text(p.read_text().replace('2', '4'))"), spec=NEW, revs=1),
    c("python-os-replace", "python3", PY.format(
      f"import os; open('{R}/.spec.tmp', 'w').write('''{NEW}'''); "
      f"os.replace('{R}/.spec.tmp', '{R}/spec')"), spec=NEW, revs=1),
    c("python-fileinput-inplace", "python3", FILEINPUT, spec=NEW, revs=1),
    c("node", "node", NODE, spec=NEW, revs=1),
    c("touch", "touch", f"touch {R}/spec {R}/status", spec=SPEC),
    c("touch-new", "touch", f"touch {R}/NOTES", spec=SPEC),
    c("chmod-same", "chmod", f"chmod 644 {R}/spec", spec=SPEC),
    c("chmod-env", "chmod", "chmod 750 dev", revs=1),
    c("chmod-wider", "chmod", f"chmod 666 {R}/spec", spec=SPEC,
      errno="Operation not permitted", rc=1),
    c("setfattr", "setfattr", f"setfattr -n user.note -v x {R}/spec",
      errno="Operation not supported", rc=1),
    c("getfattr", "getfattr", f"getfattr -d {R}/spec",
      errno="Operation not supported", rc=1),
    # ---- copiers ----
    c("cp", "cp", f"cp T/new.spec {R}/spec", spec=NEW, revs=1),
    c("cp-r", "cp", f"cp -r {R} dev/pools/copy", copy=SPEC, revs=1),
    c("cp-a", "cp", f"cp -a {R} dev/pools/copy", copy=SPEC, revs=1),
    c("cp-r-in", "cp", f"cp -r {R} T/copy && cp -r T/copy dev/pools/",
      copy=SPEC, revs=1),
    c("cp-a-in", "cp", f"cp -a {R} T/copy && cp -a T/copy dev/pools/",
      copy=SPEC, revs=1),
    c("mv", "mv", f"cp T/new.spec {R}/spec.new && mv {R}/spec.new {R}/spec",
      spec=NEW, revs=1),
    c("mv-across", "mv", f"mv T/new.spec {R}/spec", spec=NEW, revs=1),
    c("install", "install", f"install -m 644 T/new.spec {R}/spec",
      spec=NEW, revs=1),
    c("rsync-out", "rsync", "rsync -a dev/ T/out/ && cat "
      "T/out/pools/train/spec", out=SPEC),
    c("rsync-a-in", "rsync", f"rsync -a {R}/ T/copy/ && "
      "rsync -a T/copy/ dev/pools/copy/", copy=SPEC, revs=1),
    c("rsync-a-in-named", "rsync", f"rsync -a {R}/ T/copy/ && "
      "rsync -a T/copy dev/pools/", copy=SPEC, revs=1),
    c("rsync-inplace-in", "rsync", f"rsync -a {R}/ T/copy/ && "
      "rsync -a --inplace T/copy/ dev/pools/copy/", copy=SPEC, revs=1),
    c("rsync-a-back", "rsync", f"rsync -a {R}/ T/copy/ && "
      "printf 'accelerator = cpu\\nnodes = 12\\n' > T/copy/spec && "
      f"rsync -a T/copy/ {R}/", spec="accelerator = cpu\nnodes = 12\n",
      revs=1),
    c("rsync-a-pools", "rsync", "rsync -a dev/pools/ T/pools/ && "
      "mv T/pools/train T/pools/copy && rsync -a T/pools/ dev/pools/",
      copy=SPEC, revs=1),
    c("rsync-spec", "rsync", f"rsync -a -I T/new.spec {R}/spec",
      spec=NEW, revs=1),
    c("rsync-inplace-spec", "rsync",
      f"rsync -a -I --inplace T/new.spec {R}/spec", spec=NEW, revs=1),
    c("rsync-over-status", "rsync", f"printf 'x\\n' > T/status && "
      f"rsync T/status {R}/status", errno="Operation not permitted",
      rc=23),
    c("mv-over-status", "mv", f"mv T/new.spec {R}/status",
      errno="Operation not permitted", rc=1),
    c("rm-status", "rm", f"rm -f {R}/status",
      errno="Operation not permitted", rc=1),
    c("cp-r-environment", "cp", "cp -r dev staging", env="staging"),
    c("cp-a-environment", "cp", "cp -a dev staging", env="staging"),
    c("cp-r-environment-back", "cp", "cp -a dev T/copy && "
      "cp -r T/copy staging", env="staging"),
    c("rsync-a-environment", "rsync", "rsync -a dev/ staging/",
      env="staging"),
    c("rsync-a-environment-back", ("rsync", "cp"), "cp -a dev T/copy && "
      "rsync -a T/copy/ staging/", env="staging"),
    c("tar-x-environment", "tar", "tar -cf T/e.tar dev && mkdir T/x && "
      "tar -C T/x -xf T/e.tar && mv T/x/dev T/x/staging && "
      "tar -C T/x -cf T/s.tar staging && tar -xf T/s.tar", env="staging"),
    c("rsync-a-environment-secrets", "rsync", "printf s3cret > "
      "dev/secrets/tok && rsync -a dev/ staging/", revs=1,
      errno="Invalid argument", rc=23),
    c("tar-c", "tar", "tar -cf T/all.tar dev && tar -tf T/all.tar",
      out=f"{R}/status.json"),
    c("tar-x", "tar", "tar -C dev/pools -cf T/p.tar --transform "
      "s/^train/copy/ train && tar -C dev/pools -xf T/p.tar",
      copy=SPEC, revs=1),
    c("tar-x-xattrs", ("tar", "setfattr"), f"cp -r {R} T/copy && "
      "setfattr -n user.note -v x T/copy/spec && "
      "tar --xattrs -C T/ -cf T/p.tar copy && "
      "tar --xattrs -C dev/pools -xf T/p.tar", copy=SPEC, revs=1),
    c("tar-x-xattrs-spec", ("tar", "setfattr"), "mkdir T/train && "
      "cp T/new.spec T/train/spec && setfattr -n user.note -v x "
      "T/train/spec && tar --xattrs -C T/ -cf T/p.tar train/spec && "
      "tar --xattrs -C dev/pools -xf T/p.tar", spec=NEW, revs=1),
    c("python-mknod", "python3", PY.format(
      f"import os; os.mknod('{R}/NOTES'); "
      f"open('{R}/NOTES', 'w').write('x')"), spec=SPEC),
    c("mknod-fifo", "mknod", f"mknod {R}/fifo p",
      errno="Operation not permitted", rc=1),
    c("zip-unzip", ("zip", "unzip"), "cd dev/pools && zip -qr T/p.zip train && "
      "cd T/ && unzip -q p.zip && mv train copy && zip -qr c.zip copy && "
      "cd - >/dev/null && unzip -q T/c.zip",
      copy=SPEC, revs=1),
]


def programs_missing(case):
    return [p for p in case.needs if not have(p)]


@pytest.fixture
def still(mnt):
    """dev with a ready pool `train`, looked at once and then left
    alone, so whole-tree readers see files that hold still."""
    mnt.sh("mkdir dev && echo 'refresh_s = 86400' >> dev/config && "
           f"mkdir {R} && printf '{SPEC}' > {R}/spec && "
           "echo refresh > dev/ctl")
    wait_for(lambda: read(mnt / R / "state") == "ready\n",
             what="the pool to be ready")
    time.sleep(0.3)
    return mnt


def run(cmd, cwd, tmp):
    """The case's command with T as a folder of its own, holding
    new.spec; returns the CompletedProcess."""
    tmp.mkdir()
    (tmp / "new.spec").write_text(NEW)
    script = cmd.replace("T/", f"{tmp}/")
    return subprocess.run(["bash", "-c", script], cwd=cwd, text=True,
                          capture_output=True, timeout=60)


def on_ext4(mnt, case, tmp_path):
    """The same command in a local folder holding a copy of dev; its
    result and the names it left in the pool's folder."""
    local = tmp_path / "local"
    local.mkdir()
    shutil.copytree(mnt / "dev", local / "dev", symlinks=True)
    before = set(os.listdir(local / R))
    res = run(case.cmd, local, tmp_path / "t-local")
    return res, sorted(set(os.listdir(local / R)) - before)


def same_environment(mnt, a, b):
    """What differs between two environments' texts: config, policy,
    and each resource's spec."""
    texts = ["config", "policy"] + [
        f"{kind}/{name}/spec" for kind in ("pools", "endpoints")
        for name in os.listdir(mnt / a / kind)]
    differ = [t for t in texts if not (mnt / b / t).exists() or
              read(mnt / a / t) != read(mnt / b / t)]
    for kind in ("pools", "endpoints"):
        if sorted(os.listdir(mnt / a / kind)) != \
                sorted(os.listdir(mnt / b / kind)):
            differ.append(kind)
    return differ


def names(mnt, folder=R):
    return sorted(os.listdir(mnt / folder))


@pytest.mark.parametrize("case", [
    pytest.param(k, id=k.id, marks=pytest.mark.skipif(
        bool(programs_missing(k)),
        reason=f"not installed: {' '.join(programs_missing(k))} "
               "(tools/install-deps.sh installs it)"))
    for k in CASES])
def test_program_on_the_mount(still, case, tmp_path):
    ref, left = on_ext4(still, case, tmp_path)
    before, revs = names(still), revisions(still)
    res = run(case.cmd, still.path, tmp_path / "t-mount")
    said = f"{case.cmd}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    if case.errno:
        assert ref.returncode == 0, ref.stderr
        assert res.returncode == case.rc, said
        assert case.errno in res.stderr, said
    else:
        assert ref.returncode == case.rc, ref.stderr
        assert res.returncode == case.rc, said
    if case.out is not None:
        if case.out == "":
            assert res.stdout == "", said
        else:
            assert case.out in res.stdout, said
    if case.spec is not None:
        assert read(still / R / "spec") == case.spec
    for name, value in case.fields.items():
        assert read(still / R / name) == value
    if case.env is not None:
        assert same_environment(still, "dev", case.env) == []
    if case.copy is not None:
        assert read(still / "dev/pools/copy/spec") == case.copy
        assert names(still, "dev/pools/copy") == before
        assert "draft" not in read(still / "dev/pools/copy/status")
    assert revisions(still) == revs + [revs[-1] + i + 1
                                       for i in range(case.revs)], said
    # What the program leaves beside the spec (a backup) is what it
    # leaves on ext4, and no temporary file.
    assert names(still) == sorted(before + ([] if case.errno else left))
    assert "state: " in read(still / R / "status")
