#!/bin/bash
# tests/guest/mutation_check.sh [--cuts N] [--only ID]: does the power-cut
# test (ops_powercut.sh) catch a missing fsync in the metadata path?
#
# For each mutation below, one at a time: a scratch git worktree of HEAD
# gets that one durability call removed, its rawdax_powercut is rebuilt, and
# ops_powercut.sh runs up to N (default 4) cuts on the ext4 disk region with
# only the operation kind that reaches the call, every cut right after an
# acknowledged step (--step-cuts; one kind, so no other thread's fsync
# commits the journal for it). A mutation is caught when a check fails.
# Prints one line per mutation: caught after K cuts, or survived N cuts
# (each run's log stays in build/mutation-logs/).
# Exit 0 once all ran (the verdicts are findings, not failures); 2 on a
# build or setup error. Outside CI: about 10-25 minutes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cuts=4
only=""
while [ $# -gt 0 ]; do
  case $1 in
    --cuts) cuts=${2:?}; shift ;;
    --only) only=${2:?}; shift ;;
    *) echo "usage: mutation_check.sh [--cuts N] [--only ID]" >&2; exit 2 ;;
  esac
  shift
done

# mutation ID KINDS FILE OLD NEW: OLD (exactly once in FILE) becomes NEW.
ids=() kinds_of=() files=() olds=() news=()
mutation() { ids+=("$1"); kinds_of+=("$2"); files+=("$3"); olds+=("$4"); news+=("$5"); }
mutation create-file-fsync c src/media/files.cc \
  'if (sized && ::fsync(fd.get()) != 0)' \
  'if (sized && false)'
mutation fsync-directory r src/media/files.cc \
  'if (::fsync(fd.get()) != 0) return errno_error(errno, "fsync " + dir);' \
  '(void)fd;'
mutation metadata-fsync r src/media/files.cc \
  '  if (::fsync(fd.get()) != 0) {
    int err = errno;' \
  '  if (false) {
    int err = errno;'
mutation metadata-rename-dir-fsync r src/media/files.cc \
  '  return fsync_directory(parent_of(path));' \
  '  return ok();'
mutation create-dir-fsync c src/region/catalog.cc \
  'Status made = fsync_directory(backing_dir(dir_));' \
  'Status made = ok();'
mutation destroy-dir-fsync c src/region/catalog.cc \
  '    return errno_error(errno, "namespace " + name + ": cannot remove " + path);
  }
  return fsync_directory(backing_dir(dir_));' \
  '    return errno_error(errno, "namespace " + name + ": cannot remove " + path);
  }
  return ok();'
mutation orphans-dir-fsync c src/region/catalog.cc \
  '    return name.rfind("rawdax.meta.tmp.", 0) == 0 || name.rfind(".rawdax-probe.", 0) == 0;
  }));
  return fsync_directory(backing_dir(dir_));' \
  '    return name.rfind("rawdax.meta.tmp.", 0) == 0 || name.rfind(".rawdax-probe.", 0) == 0;
  }));
  return ok();'
mutation restore-data-fdatasync x src/region/catalog.cc \
  'if (::fdatasync(object.fd.get()) != 0) return errno_error(errno, "fdatasync " + path);' \
  '(void)path;'
mutation restore-dir-fsync x src/region/catalog.cc \
  '    crash_point("detached object synced");
    RAWDAX_RETURN_IF_ERROR(fsync_directory(backing_dir(dir_)));' \
  '    crash_point("detached object synced");'
mutation snapshot-fsync s src/snapshot/snapshot_file.cc \
  'if (::fsync(fd_.get()) != 0) return errno_error(errno, "fsync " + tmp_path_);' \
  '(void)0;'
mutation snapshot-dir-fsync s src/snapshot/snapshot_file.cc \
  'RAWDAX_RETURN_IF_ERROR(fsync_directory(dir.empty() ? "." : dir));' \
  '(void)dir;'

# Beside the repository, not under /tmp: the guest mounts its own /tmp, and
# runs the mutant tool from the host's tree.
mkdir -p "$repo/build"
tree=$(mktemp -d "$repo/build/mutants.XXXXXX")
logs="$repo/build/mutation-logs"
mkdir -p "$logs"
cleanup() {
  git -C "$repo" worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"
}
trap cleanup EXIT
git -C "$repo" worktree add --detach --force "$tree" HEAD >/dev/null
cmake -S "$tree" -B "$tree/build" -G Ninja -DRAWDAX_BUILD_BENCHMARKS=OFF >/dev/null ||
  { echo "mutation check: cannot configure $tree" >&2; exit 2; }

results=()
for ((k = 0; k < ${#ids[@]}; k++)); do
  id=${ids[k]} kinds=${kinds_of[k]} file=${files[k]} old=${olds[k]} new=${news[k]}
  [ -z "$only" ] || [ "$only" = "$id" ] || continue
  git -C "$tree" checkout -q -- .
  python3 - "$tree/$file" "$old" "$new" <<'EOF' || { echo "mutation check: $id: the code to remove is not in $file once" >&2; exit 2; }
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(1)
open(path, "w").write(text.replace(old, new))
EOF
  cmake --build "$tree/build" --target rawdax_powercut >/dev/null ||
    { echo "mutation check: $id does not build" >&2; exit 2; }
  echo "mutation check: $id (kinds $kinds): up to $cuts cuts"
  verdict="survived $cuts cuts"
  log="$logs/$id.log"
  if ! "$here/ops_powercut.sh" "$cuts" --media disk --kinds "$kinds" --step-cuts \
       --tool "$tree/build/tests/rawdax_powercut" >"$log" 2>&1; then
    # Caught: a check after a cut failed. Anything else is an error of the run.
    why=$(grep -aE 'OPS FAILED' "$log" | head -n 1 || true)
    after=$(grep -ac 'power cut (SIGKILL' "$log" || true)
    if [ -z "$why" ] || [ "$after" = 0 ]; then
      echo "mutation check: $id: the run failed without a failed check ($log):" >&2
      tail -n 5 "$log" >&2
      exit 2
    fi
    verdict="caught after $after cuts: ${why#*OPS FAILED: }"
  fi
  echo "mutation check: $id: $verdict"
  results+=("$id: $verdict")
done
git -C "$tree" checkout -q -- .
echo "mutation check: summary"
printf '  %s\n' "${results[@]}"
