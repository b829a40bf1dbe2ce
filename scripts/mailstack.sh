#!/usr/bin/env bash
# A throw-away mail stack on loopback for ticketd's end-to-end tests:
# Dovecot (IMAP, IMAPS, LMTP) and Postfix (SMTP with STARTTLS, submission and
# SMTPS with AUTH) delivering into Dovecot over LMTP. No systemd, no syslog:
# everything (config, certificates, queue, mailboxes, logs) lives in STATE_DIR.
#
# Usage: scripts/mailstack.sh COMMAND [STATE_DIR]
#   install               install the Debian packages that are missing
#                         (dovecot-core dovecot-imapd dovecot-lmtpd postfix
#                         openssl); needs root the first time, no-op after
#   up STATE_DIR          install if needed, write the configuration, start
#                         both servers, print the settings as KEY=VALUE lines
#   down STATE_DIR        stop both servers (idempotent; keeps the files)
#   kill STATE_DIR        like down, but SIGKILL at once (~0.1 s instead of
#                         ~2 s): for a state dir that is deleted next
#   stop-imap|start-imap STATE_DIR   stop / start only Dovecot (same state)
#   stop-smtp|start-smtp STATE_DIR   stop / start only Postfix (same state)
#   kick STATE_DIR USER   close USER's IMAP sessions from the server side
#                         (doveadm kick), as a provider does when a token
#                         expires; a restart would not: Dovecot's running
#                         sessions outlive its master
#   env STATE_DIR         print the settings again
#   status STATE_DIR      say which server is running (exit 1 if one is not)
#
# Environment for `up` (defaults in brackets; ignored while the stack in
# STATE_DIR is already running, whose saved settings then win):
#   IMAP_PORT [10143]  IMAPS_PORT [10993]  LMTP_PORT [10024]
#   SMTP_PORT [10025]       plain SMTP, STARTTLS offered, no AUTH; accepts
#                           mail for MAIL_DOMAINS only, relays nothing
#   SUBMISSION_PORT [10587] STARTTLS required, AUTH required (PLAIN/LOGIN,
#                           XOAUTH2/OAUTHBEARER)
#   SMTPS_PORT [10465]      implicit TLS, AUTH required
#   MAIL_DOMAINS ["example.test customer.test"]: every address in these
#                           domains is a mailbox (created on first use), its
#                           login is the full address, password MAIL_PASSWORD
#   MAIL_PASSWORD [secret]
#   IMAP_CAPABILITY [Dovecot's own]: the capability list Dovecot advertises
#                           instead of its own (e.g. one without MOVE, IDLE)
#   OAUTH2_INTROSPECTION_URL [http://127.0.0.1:9/introspect, nothing there]:
#                           the RFC 7662 token introspection endpoint of the
#                           identity provider the tests run; IMAP and (through
#                           Dovecot's SASL) submission/SMTPS then also take
#                           XOAUTH2 and OAUTHBEARER with a token it calls
#                           active for that user ({"active":true,
#                           "username":"<the login>"})
#   MAILSTACK_OWNER_PID     when set, a watcher takes the stack down once that
#                           process has exited (a test run that was killed
#                           leaves no servers behind); MAILSTACK_OWNER_RM=1
#                           also removes STATE_DIR then
#
# The certificate: a CA made for this state dir (TLS_CA, the file a client
# trusts) signed the server certificate, valid for localhost, 127.0.0.1 and
# mx.example.test; a self-signed end-entity certificate would be rejected by
# rustls/webpki (CaUsedAsEndEntity), hence the two levels.
#
# Addresses with parents not reachable by the `mail`/`postfix` users (e.g.
# under /root) do not work: use a directory under /tmp. Keep STATE_DIR short
# (Dovecot's unix sockets live in it; a socket path is at most 107 bytes).
set -euo pipefail
umask 022

# Dovecot's oauth2 passdb (XOAUTH2, OAUTHBEARER) is built into dovecot-core's
# auth process (Debian 12, 2.3.19): no package of its own.
PACKAGES="dovecot-core dovecot-imapd dovecot-lmtpd postfix openssl"
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
INSTALL_LOCK=/var/lock/ticketd-mailstack-install.lock

die() { echo "mailstack: $*" >&2; exit 1; }
note() { echo "mailstack: $*" >&2; }

# --- packages ---------------------------------------------------------------

# A package counts as present when the file the stack needs from it exists.
package_present() {
  case "$1" in
    dovecot-core) [ -x /usr/sbin/dovecot ] ;;
    dovecot-imapd) [ -x /usr/lib/dovecot/imap ] ;;
    dovecot-lmtpd) [ -x /usr/lib/dovecot/lmtp ] ;;
    postfix) [ -x /usr/sbin/postfix ] && [ -x /usr/sbin/postconf ] && [ -x /usr/lib/postfix/sbin/master ] ;;
    openssl) command -v openssl >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}

missing_packages() {
  local p out=""
  for p in $PACKAGES; do package_present "$p" || out="$out $p"; done
  echo "${out# }"
}

apt_lists_present() {
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

apt_install() {
  apt-get -q -y --no-install-recommends \
    -o DPkg::Lock::Timeout=600 \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    install "$@" >&2
}

install_packages() {
  local missing
  missing=$(missing_packages)
  [ -z "$missing" ] && return 0
  [ "$(id -u)" = 0 ] || die "missing packages ($missing): run '$SELF install' as root"
  command -v apt-get >/dev/null || die "missing packages ($missing) and no apt-get: install them by hand"
  # Tests starting stacks in parallel on a fresh machine: one installs, the
  # others wait and then find everything present.
  exec 9>"$INSTALL_LOCK"
  flock -w 1800 9 || die "timed out waiting for $INSTALL_LOCK"
  missing=$(missing_packages)
  if [ -n "$missing" ]; then
    note "installing $missing"
    export DEBIAN_FRONTEND=noninteractive
    # Without a configuration Debian's postinst neither writes
    # /etc/postfix/main.cf nor starts a system Postfix on port 25; ours
    # has its own config dir anyway. Only the default answer is preseeded.
    case " $missing " in
      *" postfix "*)
        if command -v debconf-set-selections >/dev/null; then
          echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        fi ;;
    esac
    # shellcheck disable=SC2086
    if apt_lists_present && apt_install $missing; then
      :
    else
      note "apt-get install failed or no package lists: apt-get update, then again"
      # an earlier install interrupted half-way blocks every apt-get install
      dpkg --configure -a >&2 || true
      apt-get -q -o DPkg::Lock::Timeout=600 update >&2 || die "apt-get update failed"
      # shellcheck disable=SC2086
      apt_install $missing || die "apt-get install $missing failed"
    fi
    missing=$(missing_packages)
    [ -z "$missing" ] || die "still missing after apt-get install: $missing"
  fi
  exec 9>&-
}

# --- state ------------------------------------------------------------------

state_dir() {
  [ -n "${1:-}" ] || die "STATE_DIR missing (usage: $0 up|down|... STATE_DIR)"
  mkdir -p "$1"
  (cd "$1" && pwd)
}

load_env() {
  [ -f "$S/mailstack.env" ] || die "$S is not a mail stack state dir (run 'up' first)"
  # shellcheck disable=SC1091
  . "$S/mailstack.env"
}

print_env() { cat "$S/mailstack.env"; }

# pid of a process of this stack from its pid file, or nothing. A stale
# pid file (reboot, pid reuse) must not make us signal somebody else.
dovecot_pid() {
  local f="$S/dovecot/run/master.pid" pid c
  [ -f "$f" ] || return 0
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 0
  c=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 0
  [[ $c == *"$S/dovecot/dovecot.conf"* ]] && echo "$pid"
  return 0
}

postfix_pid() {
  local f="$S/postfix/queue/pid/master.pid" pid c
  [ -f "$f" ] || return 0
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] || return 0
  c=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ") || return 0
  [[ $'\n'$c$'\n' == *$'\n'"MAIL_CONFIG=$S/postfix/etc"$'\n'* ]] && echo "$pid"
  return 0
}

# with a time limit: a port owned by a process that never accepts (full
# backlog) would make a plain connect hang for minutes
port_open() { timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' port_open "$1" 2>/dev/null; }

# wait_ports open|closed SECONDS PORT...
wait_ports() {
  local want=$1 secs=$2 p i
  shift 2
  for p in "$@"; do
    for ((i = 0; i < secs * 20; i++)); do
      if port_open "$p"; then [ "$want" = open ] && break; else [ "$want" = closed ] && break; fi
      sleep 0.05
    done
    [ $i -lt $((secs * 20)) ] || return 1
  done
}

# A zombie counts as gone: the masters are children of PID 1, and in a
# container PID 1 may reap them only after a while.
alive() {
  local stat
  stat=$(cat 2>/dev/null "/proc/$1/stat") || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

wait_gone() { # PID SECONDS
  local i
  for ((i = 0; i < $2 * 20; i++)); do
    alive "$1" || return 0
    sleep 0.05
  done
  return 1
}

# --- configuration ----------------------------------------------------------

make_certs() {
  local t="$S/tls"
  [ -f "$t/server.pem" ] && [ -f "$t/server.key" ] && [ -f "$t/ca.pem" ] && return 0
  mkdir -p "$t"
  cat >"$t/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = ticketd mailstack test CA
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,DNS:mx.example.test,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  {
    openssl req -x509 -config "$t/openssl.cnf" -extensions ca_ext "${ec[@]}" -days 3650 \
      -subj "/CN=ticketd mailstack test CA" -keyout "$t/ca.key" -out "$t/ca.pem"
    openssl req -new -config "$t/openssl.cnf" "${ec[@]}" -subj "/CN=localhost" \
      -keyout "$t/server.key" -out "$t/server.csr"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" \
      -set_serial "0x$(openssl rand -hex 8)" -days 3650 \
      -extfile "$t/openssl.cnf" -extensions server_ext -out "$t/server.pem"
  } >"$t/openssl.log" 2>&1 || { cat "$t/openssl.log" >&2; die "could not make the test certificates"; }
  chmod 600 "$t/ca.key" "$t/server.key"
}

write_config() {
  local d u filter="" imap_capability=""
  for d in $MAIL_DOMAINS; do filter="$filter *@$d"; done
  # IMAP_CAPABILITY replaces what Dovecot advertises (to test a client
  # against a server without, say, MOVE or IDLE)
  if [ -n "${IMAP_CAPABILITY:-}" ]; then
    imap_capability="protocol imap {
  imap_capability = $IMAP_CAPABILITY
}"
  fi
  mkdir -p "$S/dovecot/run" "$S/dovecot/state" "$S/mail" \
    "$S/postfix/etc" "$S/postfix/queue" "$S/postfix/data" "$S/postfix/log"
  chown mail:mail "$S/mail"
  chown postfix "$S/postfix/data" "$S/postfix/log" # postfix refuses a data dir it does not own

  cat >"$S/dovecot/dovecot.conf" <<CONF
# written by scripts/mailstack.sh
base_dir = $S/dovecot/run
state_dir = $S/dovecot/state
log_path = $S/dovecot/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = <$S/tls/server.pem
ssl_key = <$S/tls/server.key
disable_plaintext_auth = no
auth_mechanisms = plain login oauthbearer xoauth2
auth_username_format = %Lu
# a wrong password is refused at once (default: after 2 s)
auth_failure_delay = 0
# no cache: a revoked token must fail at the next login, not after the TTL
auth_cache_size = 0
# Dovecot will not run mail processes as root
first_valid_uid = 8
mail_uid = mail
mail_gid = mail
mail_location = maildir:$S/mail/%d/%n/Maildir
mail_plugins =
# a test stack: no fsync, many connections per user from 127.0.0.1
mail_fsync = never
mail_max_userip_connections = 200
namespace inbox {
  inbox = yes
  separator = /
}
# OAuth 2.0 bearer tokens (XOAUTH2, OAUTHBEARER), checked at every login
# by RFC 7662 introspection; before the password passdb
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $S/dovecot/oauth2.conf
}
# every address in MAIL_DOMAINS, one password. Only for these mechanisms:
# else "auth=Bearer <the password>" would log in by XOAUTH2; "none" is
# LMTP's user lookup
passdb {
  driver = static
  args = password=$MAIL_PASSWORD
  username_filter =$filter
  mechanisms = plain login none
}
# any other name: "authentication failed", not "temporary failure"
passdb {
  driver = passwd-file
  args = scheme=PLAIN /dev/null
}
userdb {
  driver = static
  args = uid=mail gid=mail home=$S/mail/%d/%n
}
protocol lmtp {
  postmaster_address = postmaster@example.test
}
$imap_capability
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $LMTP_PORT
  }
}
# SASL for Postfix's submission and smtps services
service auth {
  unix_listener auth-postfix {
    mode = 0666
  }
}
# no auth penalty: after failed logins from 127.0.0.1 Dovecot would delay
# every further login by seconds (auth_failure_delay does not cover it)
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service stats {
  unix_listener stats-reader {
    mode = 0666
  }
  unix_listener stats-writer {
    mode = 0666
  }
}
CONF

  cat >"$S/dovecot/oauth2.conf" <<CONF
# written by scripts/mailstack.sh: RFC 7662 token introspection
introspection_mode = post
introspection_url = $OAUTH2_INTROSPECTION_URL
username_attribute = username
active_attribute = active
active_value = true
CONF

  cat >"$S/postfix/etc/main.cf" <<CONF
# written by scripts/mailstack.sh
compatibility_level = 3.6
queue_directory = $S/postfix/queue
data_directory = $S/postfix/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.test
mydomain = example.test
myorigin = example.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
biff = no
smtputf8_enable = no
# no syslog: log into the state dir
maillog_file = $S/postfix/log/postfix.log
maillog_file_prefixes = $S
# only these domains, over LMTP into Dovecot; nothing is relayed, nothing
# leaves the machine, authenticated or not
virtual_mailbox_domains = $MAIL_DOMAINS
virtual_transport = lmtp:inet:127.0.0.1:$LMTP_PORT
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
relayhost =
default_transport = error:5.7.1 the test mail stack delivers only to $MAIL_DOMAINS
relay_transport = error:5.7.1 the test mail stack delivers only to $MAIL_DOMAINS
# TLS with the stack's test certificate: STARTTLS offered on the SMTP port
smtpd_tls_cert_file = $S/tls/server.pem
smtpd_tls_key_file = $S/tls/server.key
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtp_tls_security_level = none
lmtp_tls_security_level = none
smtpd_sasl_type = dovecot
smtpd_sasl_path = $S/dovecot/run/auth-postfix
smtpd_sasl_auth_enable = no
# a test stack: retry deferred mail (e.g. while Dovecot is stopped) within
# seconds, not minutes, and never slow down a burst of submissions
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
in_flow_delay = 0
smtpd_error_sleep_time = 0
CONF

  # Postfix waits ~2 s at start when main.cf is younger than that (a
  # time-stamp race guard): a fresh file would cost every new stack 2 s.
  touch -d '-10 seconds' "$S/postfix/etc/main.cf"

  # all services unchrooted: the chroot would be /var/spool/postfix
  cat >"$S/postfix/etc/master.cf" <<CONF
# written by scripts/mailstack.sh
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
127.0.0.1:$SUBMISSION_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
127.0.0.1:$SMTPS_PORT inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
pickup     unix  n - n 60   1 pickup
cleanup    unix  n - n -    0 cleanup
qmgr       unix  n - n 300  1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -    - trivial-rewrite
bounce     unix  - - n -    0 bounce
defer      unix  - - n -    0 bounce
trace      unix  - - n -    0 bounce
verify     unix  - - n -    1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -    - proxymap
proxywrite unix  - - n -    1 proxymap
smtp       unix  - - n -    - smtp
relay      unix  - - n -    - smtp
showq      unix  n - n -    - showq
error      unix  - - n -    - error
retry      unix  - - n -    - error
discard    unix  - - n -    - discard
lmtp       unix  - - n -    - lmtp
anvil      unix  - - n -    1 anvil
scache     unix  - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
CONF

  cat >"$S/mailstack.env" <<ENV
MAILSTACK_DIR=$S
MAIL_HOST=127.0.0.1
IMAP_HOST=127.0.0.1
IMAP_PORT=$IMAP_PORT
IMAPS_PORT=$IMAPS_PORT
LMTP_PORT=$LMTP_PORT
SMTP_PORT=$SMTP_PORT
SUBMISSION_PORT=$SUBMISSION_PORT
SMTPS_PORT=$SMTPS_PORT
MAIL_DOMAINS="$MAIL_DOMAINS"
MAIL_PASSWORD=$MAIL_PASSWORD
IMAP_CAPABILITY="$IMAP_CAPABILITY"
OAUTH2_INTROSPECTION_URL=$OAUTH2_INTROSPECTION_URL
TLS_CA=$S/tls/ca.pem
TLS_SERVER_NAME=localhost
DOVECOT_LOG=$S/dovecot/dovecot.log
POSTFIX_LOG=$S/postfix/log/postfix.log
ENV
  touch "$S/.mailstack"
}

# --- start / stop -----------------------------------------------------------

start_dovecot() {
  [ -n "$(dovecot_pid)" ] && return 0
  if ! dovecot -c "$S/dovecot/dovecot.conf" </dev/null >>"$S/dovecot/start.log" 2>&1; then
    tail -n 20 "$S/dovecot/start.log" "$S/dovecot/dovecot.log" >&2 2>/dev/null || true
    die "dovecot did not start"
  fi
  wait_ports open 15 "$IMAP_PORT" "$IMAPS_PORT" "$LMTP_PORT" ||
    { tail -n 20 "$S/dovecot/dovecot.log" >&2 || true; die "dovecot is not listening on $IMAP_PORT/$IMAPS_PORT/$LMTP_PORT"; }
}

start_postfix() {
  [ -n "$(postfix_pid)" ] && return 0
  # queue dirs made and checked by the first start: skip the ~0.4 s check
  [ -d "$S/postfix/queue/pid" ] && touch "$S/postfix/queue/quick-start"
  if ! postfix -c "$S/postfix/etc" start </dev/null >>"$S/postfix/log/start.log" 2>&1; then
    tail -n 20 "$S/postfix/log/start.log" "$S/postfix/log/postfix.log" >&2 2>/dev/null || true
    die "postfix did not start"
  fi
  wait_ports open 15 "$SMTP_PORT" "$SUBMISSION_PORT" "$SMTPS_PORT" ||
    { tail -n 20 "$S/postfix/log/postfix.log" >&2 || true; die "postfix is not listening on $SMTP_PORT/$SUBMISSION_PORT/$SMTPS_PORT"; }
}

# stop_servers term|kill dovecot|postfix...
# term: SIGTERM to the masters (they stop their children), all at once, then
# wait (Dovecot takes ~2 s, Postfix ~1-2 s); SIGKILL to the process group
# after 15 s. kill: SIGKILL to the process groups at once (each master leads
# its own session and group), for state that is about to be deleted.
stop_servers() {
  local mode=$1 server pid pids=()
  shift
  local stopped=()
  for server in "$@"; do
    pid=$("${server}_pid")
    if [ -n "$pid" ]; then pids+=("$pid"); stopped+=("$server"); fi
  done
  for pid in "${pids[@]}"; do
    if [ "$mode" = kill ]; then kill_group "$pid"; else kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in "${pids[@]}"; do
    wait_gone "$pid" 15 || { note "$pid did not stop, killing it"; kill_group "$pid"; wait_gone "$pid" 5 || true; }
  done
  # only for a server that ran: the ports of one that never started may
  # well be somebody else's
  for server in "${stopped[@]}"; do
    case $server in
      dovecot)
        rm -f "$S/dovecot/run/master.pid"
        # the children hold the listening sockets until they are gone too
        [ -z "${IMAP_PORT:-}" ] || wait_ports closed 10 "$IMAP_PORT" "$IMAPS_PORT" "$LMTP_PORT" ||
          note "dovecot's ports are still open" ;;
      postfix)
        [ -z "${SMTP_PORT:-}" ] || wait_ports closed 10 "$SMTP_PORT" "$SUBMISSION_PORT" "$SMTPS_PORT" ||
          note "postfix's ports are still open" ;;
    esac
  done
  return 0
}

kill_group() {
  local stat
  stat=$(cat 2>/dev/null "/proc/$1/stat") || return 0
  stat=${stat##*) }        # after "pid (comm) ": state ppid pgrp ...
  set -- "$1" $stat
  if [ "$4" = "$1" ]; then kill -KILL -- "-$1" 2>/dev/null || true; else kill -KILL "$1" 2>/dev/null || true; fi
}

# Mail deferred while Dovecot was down: deliver it now rather than at the
# next queue run.
flush_postfix() {
  [ -n "$(postfix_pid)" ] && postqueue -c "$S/postfix/etc" -f >/dev/null 2>&1 || true
}

start_watcher() {
  [ -n "${MAILSTACK_OWNER_PID:-}" ] || return 0
  stop_watcher
  # own session: a Ctrl-C to the test run does not kill the watcher
  setsid bash -c '
    while kill -0 "$1" 2>/dev/null; do sleep 1; done
    "$2" kill "$3"
    if [ "$4" = 1 ] && [ -f "$3/.mailstack" ]; then rm -rf -- "$3"; fi
  ' mailstack-watch "$MAILSTACK_OWNER_PID" "$SELF" "$S" "${MAILSTACK_OWNER_RM:-0}" \
    </dev/null >/dev/null 2>&1 &
  echo $! >"$S/watcher.pid"
}

stop_watcher() {
  local f="$S/watcher.pid" pid c
  [ -f "$f" ] || return 0
  pid=$(tr -dc 0-9 <"$f")
  rm -f "$f"
  # never ourselves (the watcher runs `down` when the owner is gone)
  [ -n "$pid" ] && [ "$pid" != "$$" ] && [ "$pid" != "$PPID" ] || return 0
  c=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 0
  [[ $c == *mailstack-watch*"$S"* ]] && kill "$pid" 2>/dev/null
  return 0
  return 0
}

# --- commands ---------------------------------------------------------------

cmd=${1:-}
case "$cmd" in
  install)
    install_packages
    ;;
  up)
    S=$(state_dir "${2:-}")
    [ "$(id -u)" = 0 ] || die "run as root (Dovecot and Postfix need it)"
    [ ${#S} -le 64 ] || die "STATE_DIR path too long for Dovecot's sockets (${#S} > 64): $S"
    install_packages
    chmod 755 "$S"
    if command -v runuser >/dev/null && ! runuser -u mail -- test -x "$S/."; then
      die "$S is not reachable by the mail user (a parent directory without o+x?)"
    fi
    if [ -f "$S/mailstack.env" ] && { [ -n "$(dovecot_pid)" ] || [ -n "$(postfix_pid)" ]; }; then
      note "already running in $S: keeping its settings"
      load_env
    else
      IMAP_PORT=${IMAP_PORT:-10143} IMAPS_PORT=${IMAPS_PORT:-10993} LMTP_PORT=${LMTP_PORT:-10024}
      SMTP_PORT=${SMTP_PORT:-10025} SUBMISSION_PORT=${SUBMISSION_PORT:-10587} SMTPS_PORT=${SMTPS_PORT:-10465}
      MAIL_DOMAINS=${MAIL_DOMAINS:-"example.test customer.test"}
      MAIL_PASSWORD=${MAIL_PASSWORD:-secret}
      IMAP_CAPABILITY=${IMAP_CAPABILITY:-}
      OAUTH2_INTROSPECTION_URL=${OAUTH2_INTROSPECTION_URL:-http://127.0.0.1:9/introspect}
      [[ $OAUTH2_INTROSPECTION_URL =~ ^https?://[^[:space:]]+$ ]] || die "OAUTH2_INTROSPECTION_URL must be an http(s) URL, not '$OAUTH2_INTROSPECTION_URL'"
      for v in IMAP_PORT IMAPS_PORT LMTP_PORT SMTP_PORT SUBMISSION_PORT SMTPS_PORT; do
        [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a port number, not '${!v}'"
      done
      make_certs
      write_config
    fi
    # a half-started stack is taken down again
    trap 'stop_servers kill postfix dovecot' EXIT
    start_dovecot
    start_postfix
    trap - EXIT
    start_watcher
    print_env
    ;;
  down)
    [ -n "${2:-}" ] || die "usage: $0 down STATE_DIR"
    [ -d "$2" ] || exit 0
    S=$(cd "$2" && pwd)
    [ -f "$S/mailstack.env" ] && . "$S/mailstack.env"
    stop_watcher
    stop_servers term postfix dovecot
    ;;
  kill)
    [ -n "${2:-}" ] || die "usage: $0 kill STATE_DIR"
    [ -d "$2" ] || exit 0
    S=$(cd "$2" && pwd)
    [ -f "$S/mailstack.env" ] && . "$S/mailstack.env"
    stop_watcher
    stop_servers kill postfix dovecot
    ;;
  stop-imap | start-imap | stop-smtp | start-smtp)
    S=$(cd "${2:?usage: $0 $cmd STATE_DIR}" && pwd) || exit 1
    load_env
    case "$cmd" in
      stop-imap) stop_servers term dovecot ;;
      start-imap) start_dovecot && flush_postfix ;;
      stop-smtp) stop_servers term postfix ;;
      start-smtp) start_postfix ;;
    esac
    ;;
  kick)
    S=$(cd "${2:?usage: $0 kick STATE_DIR USER}" && pwd) || exit 1
    [ -n "${3:-}" ] || die "usage: $0 kick STATE_DIR USER"
    load_env
    doveadm -c "$S/dovecot/dovecot.conf" kick "$3" >&2
    ;;
  env)
    S=$(cd "${2:?usage: $0 env STATE_DIR}" && pwd) || exit 1
    load_env
    print_env
    ;;
  status)
    S=$(cd "${2:?usage: $0 status STATE_DIR}" && pwd) || exit 1
    d=$(dovecot_pid) p=$(postfix_pid)
    echo "dovecot: $([ -n "$d" ] && echo "running (pid $d)" || echo stopped)"
    echo "postfix: $([ -n "$p" ] && echo "running (pid $p)" || echo stopped)"
    [ -n "$d" ] && [ -n "$p" ]
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
