# Shell helpers shared by the launch scripts (sourced, not run).
# shellcheck shell=bash

# A word as the shell reads it: bare when safe, else in single quotes.
shquote() {
  if [[ "$1" =~ ^[-A-Za-z0-9_./:=,@+%^]+$ ]]; then
    printf '%s' "$1"
  elif [[ "$1" =~ ^(--[a-z][-a-z0-9.]*=)(.*)$ ]]; then
    # --flag='value': quote only the value, which reads better
    printf '%s' "${BASH_REMATCH[1]}"
    shquote "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Words joined into one command line (no trailing newline), to print or to
# pass as a single --command= string.
join_cmd() {
  local out="" word
  for word in "$@"; do out+="$(shquote "$word") "; done
  printf '%s' "${out% }"
}
