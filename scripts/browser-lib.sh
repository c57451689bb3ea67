# Helpers shared by the scripts: install Debian's Chromium and its WebDriver
# (the console's browser tests). Source it after scripts/etcd-lib.sh; it
# defines functions only.

# Install `chromium` and `chromium-driver` if either is missing (the two come
# from one Debian source package, so apt pins them to the same version), check
# that they agree, and export what the browser tests read: COORD_CHROMIUM and
# COORD_CHROMEDRIVER. The tests are #[ignore]d in a plain `cargo test` (shown
# as ignored); run with --include-ignored, a missing browser fails them.
ensure_browser() {
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    echo "== installing chromium and chromium-driver"
    apt_install chromium chromium-driver
  fi
  command -v chromium >/dev/null 2>&1 || { echo "chromium is still missing after install" >&2; exit 1; }
  command -v chromedriver >/dev/null 2>&1 || { echo "chromedriver is still missing after install" >&2; exit 1; }
  local browser driver
  browser=$(dpkg-query -W -f='${Version}' chromium 2>/dev/null || true)
  driver=$(dpkg-query -W -f='${Version}' chromium-driver 2>/dev/null || true)
  if [ -n "$browser" ] && [ "$browser" != "$driver" ]; then
    echo "chromium $browser and chromium-driver $driver differ: install the same version of both" >&2
    exit 1
  fi
  export COORD_CHROMIUM
  COORD_CHROMIUM=$(command -v chromium)
  # Debian's /usr/bin/chromium is a wrapper script; the driver wants the binary.
  [ -x /usr/lib/chromium/chromium ] && COORD_CHROMIUM=/usr/lib/chromium/chromium
  export COORD_CHROMEDRIVER
  COORD_CHROMEDRIVER=$(command -v chromedriver)
}
