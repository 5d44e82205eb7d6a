#!/usr/bin/env bash
# Installs what the MQTT interop tests and the mqtt benchmark need from Debian:
# mosquitto (the C broker the benchmark compares against) and mosquitto-clients
# (mosquitto_pub / mosquitto_sub, the clients the tests drive the example
# brokers with). Safe to run again: installs only what is missing.
set -euo pipefail
missing=()
# The broker lives in /usr/sbin, which is not on every PATH.
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
{ command -v mosquitto_pub && command -v mosquitto_sub; } >/dev/null 2>&1 || missing+=(mosquitto-clients)
if [ "${#missing[@]}" -eq 0 ]; then
  echo "ci-mqtt-deps: mosquitto and mosquitto-clients are installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ci-mqtt-deps: apt-get is not available; cannot install ${missing[*]}" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo -n); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
# --no-install-recommends: no service is enabled beyond the package's own unit,
# and the benchmark starts its own mosquitto on a free port anyway.
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "ci-mqtt-deps: installed ${missing[*]}"
