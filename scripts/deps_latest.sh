#!/usr/bin/env bash
# `make deps-latest`: would the newest versions pyproject.toml allows still work? A scratch venv gets them
# (no lock), then the fast tests and the export/compat smoke test run in it. It reports every check and
# what differs from the lock; it exits 1 when a check broke (a release like OpenCV 5.1 shows up here,
# before the lock is refreshed with `make lock ARGS=--upgrade`). The project's .venv is not touched.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${DEPS_LATEST_VENV:-.cache/deps-latest}
LOCK=requirements/main.txt
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH="$PWD/src"

rm -rf "$VENV" && mkdir -p "$VENV"
log="$VENV.log"
echo "deps-latest: installing the newest allowed versions into $VENV (log: $log)"
if ! { "$PYTHON" -m venv "$VENV" && "$VENV/bin/python" -m pip install -q --upgrade pip \
    && "$VENV/bin/python" -m pip install -q --upgrade-strategy eager -e '.[dev]'; } >"$log" 2>&1; then
  echo "deps-latest: BROKEN: the newest versions do not install together:"
  grep -v "WARNING: Location" "$log" | tail -20
  exit 1
fi

echo "deps-latest: versions that differ from $LOCK:"
"$VENV/bin/python" - "$LOCK" <<'PY'
import re, sys
from importlib import metadata
from packaging.utils import canonicalize_name as canon
pins = {canon(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+)", open(sys.argv[1]).read(), re.M)}
got = {canon(d.metadata["Name"]): d.version for d in metadata.distributions()}
rows = [f"  {n}: {pins.get(n, '-')} -> {got.get(n, '-')}" for n in sorted(set(pins) | set(got))
        if pins.get(n) != got.get(n) and n not in ("pip", "iqs-digikam")]
print("\n".join(rows) or "  none")
PY

declare -A result
"$VENV/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider >"$VENV.pytest.log" 2>&1
result[fast tests: pytest -m 'not slow']=$?
"$VENV/bin/python" -m iqs compat --images 4 --heads regression --out-dir "$VENV/compat" >"$VENV.compat.log" 2>&1
result[export/compat smoke test: iqs compat --images 4 --heads regression]=$?

broken=0
for check in "${!result[@]}"; do
  if [ "${result[$check]}" -eq 0 ]; then
    echo "deps-latest: ok      $check"
  else
    broken=1
    echo "deps-latest: BROKEN  $check (exit ${result[$check]}):"
    case $check in
      fast*) grep -E "^(FAILED|ERROR)|Error|error:" "$VENV.pytest.log" | head -20 ;;
      *) grep -v "WARNING: Location" "$VENV.compat.log" | tail -15 ;;
    esac
  fi
done
echo "deps-latest: logs in $VENV.pytest.log and $VENV.compat.log"
exit $broken
