# Shared by scripts/quickstart, scripts/test and scripts/bench. Sourced, not run.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# A target directory outside the clone lets fresh clones on this machine reuse the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/magnum-rs-target}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi
}

APT_UPDATED=""
apt_install() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]}"
  if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_rust() {
  if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null; then
    apt_install curl ca-certificates gcc libc6-dev
    say "installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none >/dev/null
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cc >/dev/null || apt_install gcc libc6-dev
  # rust-toolchain.toml pins the version; rustup installs it on first use.
  (cd "$REPO_ROOT" && cargo --version >/dev/null)
}

# coe as one statically linked binary (musl): it runs on any x86_64 Linux without Python or
# shared libraries. Prints its path.
build_static_coe() {
  local target=x86_64-unknown-linux-musl
  apt_install musl-tools
  rustup target list --installed 2>/dev/null | grep -qx "$target" || {
    say "adding the Rust target $target"
    (cd "$REPO_ROOT" && rustup target add "$target" >/dev/null)
  }
  say "building coe (release, static: $target)"
  (cd "$REPO_ROOT" && cargo build --release --quiet --target "$target" -p coe)
  local coe="$CARGO_TARGET_DIR/$target/release/coe"
  if ldd "$coe" 2>&1 | grep -q '=>'; then
    die "$coe links shared libraries: $(ldd "$coe" 2>&1 | tr '\n' ' ')"
  fi
  printf '%s\n' "$coe"
}
