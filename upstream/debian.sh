# Debian's archive through this machine's own apt configuration, for
# sources that must come without network access beyond the package
# registries.  Sourced by upstream/fetch.sh and upstream/new_pin.sh.

# debian_mirror: print the first archive URI configured for this machine's
# own release: its suites name the release codename exactly (not -security,
# not a third-party "nodistro"-style suite).  Never a hard-coded host.
debian_mirror() {
    # The first archive URI configured for this machine's own release:
    # its suites name the release codename exactly (not -security, not a
    # third-party "nodistro"-style suite).
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || return 1
    {
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            awk -v c="$codename" '
                /^[ \t]*$/ { if (u != "" && s) print u; u = ""; s = 0; next }
                tolower($1) == "uris:" { u = $2 }
                tolower($1) == "suites:" {
                    for (i = 2; i <= NF; i++) if ($i == c) s = 1 }
                END { if (u != "" && s) print u }' "$f"
        done
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            # deb [options] URI suite components...
            sed -e 's/\[[^]]*\]//' "$f" |
                awk -v c="$codename" '$1 == "deb" && $3 == c { print $2 }'
        done
    } | head -n 1 | grep .
}


# debian_apt DIR ARGS...: apt-get with a private configuration under DIR
# (its own sources list, lists and cache; the machine's are untouched).
debian_apt() {
    _d=$1
    shift
    apt-get -o "Dir::Etc::SourceList=$_d/sources.list" \
            -o "Dir::Etc::SourceParts=$_d/parts" \
            -o "Dir::State::Lists=$_d/lists" \
            -o "Dir::Cache=$_d/cache" \
            -o "Debug::NoLocking=1" \
            -o "APT::Sandbox::User=$(id -un)" -q "$@"
}

# debian_apt_update DIR LINE: a private configuration in DIR whose only
# source is LINE (e.g. "deb-src MIRROR sid main"), with its index fetched
# and checked against the suite's signed Release file; log in DIR/apt.log.
debian_apt_update() {
    mkdir -p "$1/parts" "$1/lists/partial" "$1/cache/archives/partial"
    echo "$2" > "$1/sources.list"
    debian_apt "$1" update >"$1/apt.log" 2>&1
}
