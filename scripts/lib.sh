# shellcheck shell=bash
# Helpers shared by the service scripts (kafka.sh, registry.sh, postgres.sh). Source it after
# setting NAME (the prefix of every message) and, for need_java, JAVA.

log() { echo "$NAME: $*" >&2; }
die() { echo "$NAME: $*" >&2; exit 1; }

# Whether something accepts TCP connections on 127.0.0.1:$1.
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Fails with one sentence unless $JAVA is Java 17 or newer; $1 names what needs it.
need_java() {
  command -v "$JAVA" >/dev/null ||
    die "java not found (PATH or JAVA_HOME); install Java 17+, e.g. 'apt-get install -y openjdk-17-jdk-headless'."
  local major
  major=$("$JAVA" -version 2>&1 | sed -n '1s/.*version "\([0-9]*\).*/\1/p')
  (( ${major:-0} >= 17 )) ||
    die "$1 needs Java 17+ but '$JAVA' is Java ${major:-unknown}; install Java 17+ or point JAVA_HOME at one."
}
