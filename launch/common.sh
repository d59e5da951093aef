# Shared by the launch scripts (sourced, not run): dry-run handling and argument checks.
#
# With --dry-run as the first argument a script prints every command (and rendered file) it
# would run, one per line prefixed with "+ ", and calls nothing: no gcloud, sbatch or kubectl.

DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY_RUN=1
  shift
fi
ARGS=("$@")

# shell_quote ARG: ARG as the shell reads it back: bare if plain, else in single quotes.
shell_quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# quote_args ARG...: the arguments as one shell-quoted string (for a remote command line).
quote_args() {
  local out="" a
  for a in "$@"; do out+=" $(shell_quote "$a")"; done
  printf '%s' "${out# }"
}

# run CMD...: runs a command, or prints it (shell-quoted, after "+ ") under --dry-run.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+ %s\n' "$(quote_args "$@")"
  else
    "$@"
  fi
}

# usage_if_short N: prints the calling script's header comment and exits 2 if fewer than N
# positional arguments were given.
usage_if_short() {
  if [ "${#ARGS[@]}" -lt "$1" ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
  fi
}

# check_workdir_shared WORKDIR [gcs]: multi-host runs need a workdir every host sees: a gs://
# path, or (without "gcs") an absolute path on a shared filesystem.
check_workdir_shared() {
  case "$1" in
    gs://*) return ;;
    /*) [ "${2:-}" != gcs ] && return ;;
  esac
  local wanted="a gs:// path"
  [ "${2:-}" != gcs ] && wanted="a gs:// path or an absolute path on a shared filesystem"
  echo "error: WORKDIR '$1' must be $wanted, so that every host writes and resumes the same checkpoints." >&2
  exit 2
}
