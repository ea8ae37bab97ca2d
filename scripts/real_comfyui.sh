#!/usr/bin/env bash
# Builds (once) the real ComfyUI the test tier in tests/real runs against.
#
#   bash scripts/real_comfyui.sh [build]   build if missing or stale; prints the build folder
#   bash scripts/real_comfyui.sh source    prints the ComfyUI source in use, exit 3 when there is none
#
# COMFYUI_SRC  a ComfyUI source folder or .tar.gz
#              (default: ../shared/comfyui/ComfyUI-0.3.39.tar.gz beside the repo, when present)
# NCC_REAL_DIR where the build goes (default: .real-comfyui/ in the repo; git-ignored)
# NCC_REAL_PYTHON  the Python for the venv (default: python3.11, else python3)
#
# Why these pins (found by running it on the CPU-only 2-core machines, see
# ../shared/comfyui/README.md): torch==2.13.0 is the CPU wheel on local disk (anything else
# pulls a CUDA build of several GB); PyPI's torchvision is built against CUDA torch and dies at
# import beside it unless two fake-op registrations are guarded; torchaudio is left out (a few
# audio nodes then fail to import, which ComfyUI logs and survives); `requests` is imported at
# start but not listed.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_VERSION=1 # bump when the steps below change, so old builds are redone
TORCH_VERSION="${NCC_REAL_TORCH:-2.13.0}"
TORCHVISION_VERSION="${NCC_REAL_TORCHVISION:-0.28.0}"
DEST="${NCC_REAL_DIR:-$REPO/.real-comfyui}"

find_source() {
  local src="${COMFYUI_SRC:-}"
  if [ -z "$src" ]; then
    src="$REPO/../shared/comfyui/ComfyUI-0.3.39.tar.gz"
    [ -e "$src" ] || return 3
  fi
  if [ ! -e "$src" ]; then
    echo "real_comfyui: COMFYUI_SRC=$src does not exist" >&2
    return 2
  fi
  (cd "$(dirname "$src")" && echo "$(pwd)/$(basename "$src")")
}

pick_python() {
  if [ -n "${NCC_REAL_PYTHON:-}" ]; then echo "$NCC_REAL_PYTHON"; return; fi
  if command -v python3.11 >/dev/null 2>&1; then echo python3.11; else echo python3; fi
}

stamp_of() {
  # Source identity = path + size + mtime (a tarball) or the newest file (a folder).
  local src="$1"
  if [ -d "$src" ]; then
    echo "v$BUILD_VERSION dir $src $(find "$src" -type f -printf '%T@ %s %p\n' | sort | sha256sum | cut -c1-16)"
  else
    echo "v$BUILD_VERSION file $src $(stat -c '%s %Y' "$src") torch=$TORCH_VERSION tv=$TORCHVISION_VERSION"
  fi
}

patch_torchvision() {
  "$DEST/venv/bin/python" - <<'EOF'
import pathlib, sysconfig
p = pathlib.Path(sysconfig.get_paths()["purelib"]) / "torchvision" / "_meta_registrations.py"
src = p.read_text()
if "_ncc_register_fake" not in src and "@torch.library.register_fake(" in src:
    helper = (
        "def _ncc_register_fake(name):\n"
        "    # Patched by nuke_comfy_cluster's scripts/real_comfyui.sh: without the C++ ops\n"
        "    # (CUDA-built torchvision beside CPU torch) registering a fake op raises.\n"
        "    if torchvision.extension._has_ops():\n"
        "        return torch.library.register_fake(name)\n"
        "    return lambda fn: fn\n\n\n"
    )
    src = src.replace("@torch.library.register_fake(", "@_ncc_register_fake(")
    i = src.index("@_ncc_register_fake(")
    p.write_text(src[:i] + helper + src[i:])
EOF
}

build() {
  local src stamp py
  src="$(find_source)" || {
    rc=$?
    [ $rc -eq 3 ] && echo "real_comfyui: no ComfyUI source (set COMFYUI_SRC, or put ../shared/comfyui/ComfyUI-0.3.39.tar.gz beside the repo)" >&2
    return $rc
  }
  stamp="$(stamp_of "$src")"
  mkdir -p "$DEST"
  exec 9>"$DEST/.lock"
  flock 9 # two test runs at once build once
  if [ -f "$DEST/stamp" ] && [ "$(cat "$DEST/stamp")" = "$stamp" ]; then
    echo "$DEST"
    return 0
  fi
  local t0=$SECONDS
  echo "real_comfyui: building ComfyUI venv in $DEST from $src (takes a few minutes, once)" >&2
  rm -rf "$DEST/venv" "$DEST/ComfyUI" "$DEST/stamp"
  if [ -d "$src" ]; then
    cp -a "$src" "$DEST/ComfyUI"
  else
    tar xzf "$src" -C "$DEST"
    if [ ! -d "$DEST/ComfyUI" ]; then
      local top
      top="$(tar tzf "$src" | head -1 | cut -d/ -f1)"
      mv "$DEST/$top" "$DEST/ComfyUI"
    fi
  fi
  [ -f "$DEST/ComfyUI/main.py" ] || { echo "real_comfyui: $src holds no ComfyUI (no main.py)" >&2; return 2; }
  py="$(pick_python)"
  "$py" -m venv "$DEST/venv"
  grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$DEST/ComfyUI/requirements.txt" >"$DEST/requirements.txt"
  echo "requests" >>"$DEST/requirements.txt"
  local pip_rc
  set +e
  # grep: this machine's local package indexes lack most names and pip warns about each
  "$DEST/venv/bin/python" -m pip install -q --disable-pip-version-check \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" -r "$DEST/requirements.txt" 2>&1 |
    grep -v "^WARNING: Location '.*' is ignored" >&2
  pip_rc=${PIPESTATUS[0]}
  set -e
  [ "$pip_rc" -eq 0 ] || { echo "real_comfyui: pip install failed (exit $pip_rc)" >&2; return 1; }
  patch_torchvision
  "$DEST/venv/bin/python" -c "import torch, torchvision, aiohttp; print('real_comfyui: torch', torch.__version__, 'torchvision', torchvision.__version__)" >&2
  echo "$stamp" >"$DEST/stamp"
  echo "real_comfyui: built in $((SECONDS - t0)) s" >&2
  echo "$DEST"
}

case "${1:-build}" in
  build) build ;;
  source) find_source ;;
  *) echo "usage: $0 [build|source]" >&2; exit 2 ;;
esac
