#!/usr/bin/env bash
# Make sure the server programs the integration tests start are installed:
#   mosquitto                        Debian package mosquitto
#   initdb, pg_ctl, postgres (15)    Debian package postgresql-15 (found in /usr/lib/postgresql/*/bin or on PATH)
#   influxd                          Debian package influxdb (1.6.7 on Debian 12)
#   prometheus                       Debian package prometheus (2.42 on Debian 12; the Grafana dashboard tests)
#   debootstrap, systemd-nspawn,     Debian packages debootstrap, systemd-container, openssh-client, iproute2
#   ssh, ip                          (the Ansible tests boot Debian containers and converge the roles over SSH)
#   tesseract (German and English)   Debian packages tesseract-ocr, tesseract-ocr-deu, tesseract-ocr-eng (the ticket
#                                    tests read the rendered PDF back by OCR, as a driver or an inspector reads it)
# The tests start their own throwaway servers on random ports; services the packages start are stopped again.
# Quiet and idempotent when everything is there. As root, missing packages are installed with apt-get;
# otherwise the apt-get line to run is printed and the script exits 1.
set -euo pipefail

have() {  # a program on PATH or in an sbin directory that is not on every user's PATH
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

have_pg() {  # a PostgreSQL server program in Debian's versioned directories or on PATH
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/$1" ] && return 0
    done
    command -v "$1" >/dev/null 2>&1
}

missing=()
have mosquitto || missing+=(mosquitto)
{ have_pg initdb && have_pg pg_ctl && have_pg postgres; } || missing+=(postgresql-15)
have influxd || missing+=(influxdb)
have prometheus || missing+=(prometheus)
have debootstrap || missing+=(debootstrap)
have systemd-nspawn || missing+=(systemd-container)
{ have ssh && have ssh-keygen; } || missing+=(openssh-client)
have ip || missing+=(iproute2)
have_ocr_lang() {  # tesseract with the language's trained data
    have tesseract && tesseract --list-langs 2>/dev/null | grep -qx "$1"
}
have tesseract || missing+=(tesseract-ocr)
have_ocr_lang deu || missing+=(tesseract-ocr-deu)
have_ocr_lang eng || missing+=(tesseract-ocr-eng)

[ ${#missing[@]} -eq 0 ] && exit 0

install_line="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "Missing server packages for the integration tests: ${missing[*]}" >&2
    echo "Install them as root:  sudo sh -c '$install_line'" >&2
    exit 1
fi

echo "Installing ${missing[*]} (needed by the integration tests) ..."
# Keep the packages' own services from starting (Debian's policy-rc.d mechanism), unless a policy exists already.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    own_policy=1
fi
cleanup() { if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Should a service have started anyway, stop and disable it; systemctl / service may not exist here.
for unit in mosquitto postgresql influxdb prometheus; do
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        service "$unit" stop >/dev/null 2>&1 || true
    fi
done

for program in mosquitto influxd prometheus debootstrap systemd-nspawn ssh ip tesseract; do
    have "$program" || { echo "ensure-services: $program still missing after apt-get install" >&2; exit 1; }
done
have_pg initdb || { echo "ensure-services: initdb still missing after apt-get install" >&2; exit 1; }
for lang in deu eng; do
    have_ocr_lang "$lang" || { echo "ensure-services: tesseract's $lang data still missing after apt-get install" >&2; exit 1; }
done
echo "Server packages installed: ${missing[*]}"
