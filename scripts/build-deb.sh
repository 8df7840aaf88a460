#!/usr/bin/env bash
# Builds nnd_<version>_amd64.deb from the release binaries (built by `make deb` with
# --static-swift-stdlib) with Debian's own tools: dpkg-shlibdeps for Depends:, dpkg-deb to
# pack, lintian to check (its findings fail the build, but for the overrides in
# packaging/deb/lintian-overrides, each justified there).
#
#   scripts/build-deb.sh            → .build/deb/nnd_<version>_amd64.deb
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(.build/release/nnd --version)
out=.build/deb
stage=$out/nnd_${version}_amd64
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"

if ldd .build/release/nnd .build/release/nnctl | grep swift >/dev/null \
    || readelf -d .build/release/nnd .build/release/nnctl | grep -E "R(UN)?PATH.*/" >/dev/null; then
    echo "build-deb: the release binaries load the Swift toolchain's libraries; build them with make build" >&2
    exit 1
fi

install -d "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/usr/lib/sysusers.d" "$stage/usr/lib/tmpfiles.d" \
    "$stage/etc/nnd/runs" "$stage/etc/nnd/prometheus" "$stage/usr/share/man/man1" \
    "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
    "$stage/usr/share/fish/vendor_completions.d" "$stage/usr/share/doc/nnd/docs" "$stage/usr/share/doc/nnd/examples" \
    "$stage/usr/share/lintian/overrides"
# Debian's policy for binaries: stripped of debug symbols and notes.
for tool in nnd nnctl; do
    install -m 0755 ".build/release/$tool" "$stage/usr/bin/$tool"
    strip --remove-section=.comment --remove-section=.note --strip-unneeded "$stage/usr/bin/$tool"
done
install -m 0644 systemd/nnd.service systemd/nnd-retrain.service systemd/nnd-retrain.timer systemd/nnd-failure@.service \
    "$stage/lib/systemd/system/"
install -m 0644 systemd/nnd.sysusers "$stage/usr/lib/sysusers.d/nnd.conf"
install -m 0644 systemd/nnd.tmpfiles "$stage/usr/lib/tmpfiles.d/nnd.conf"
install -m 0644 etc/nnd/nnd.yaml "$stage/etc/nnd/"
install -m 0644 etc/nnd/runs/*.yaml "$stage/etc/nnd/runs/"
install -m 0644 etc/nnd/prometheus/nnd-alerts.yml "$stage/etc/nnd/prometheus/"
for page in nnd nnctl; do
    gzip -9n < ".build/plugins/GenerateManual/outputs/$page/$page.1" > "$stage/usr/share/man/man1/$page.1.gz"
done
# (a completion file is sourced, not run: no #! line)
.build/release/nnctl --generate-completion-script bash | sed '1{/^#!/d}' > "$stage/usr/share/bash-completion/completions/nnctl"
.build/release/nnctl --generate-completion-script zsh > "$stage/usr/share/zsh/vendor-completions/_nnctl"
.build/release/nnctl --generate-completion-script fish > "$stage/usr/share/fish/vendor_completions.d/nnctl.fish"
install -m 0644 README.md CONTRIBUTING.md "$stage/usr/share/doc/nnd/"
install -m 0644 docs/*.md "$stage/usr/share/doc/nnd/docs/"
install -m 0644 systemd/nnd.service.d/metrics-tcp.conf systemd/nnd.service.d/distributed.conf "$stage/usr/share/doc/nnd/examples/"
install -m 0644 packaging/deb/copyright "$stage/usr/share/doc/nnd/copyright"
install -m 0644 packaging/deb/lintian-overrides "$stage/usr/share/lintian/overrides/nnd"
# A native package's changelog: this version, dated by its commit.
commit_date=$(git log -1 --format=%cD 2>/dev/null || date -R)
{
    echo "nnd ($version) unstable; urgency=medium"
    echo
    echo "  * Release $version (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))."
    echo
    echo " -- nnd developers <nnd-maintainers@example.org>  $commit_date"
} | gzip -9n > "$stage/usr/share/doc/nnd/changelog.gz"

for script in postinst prerm postrm; do install -m 0755 "packaging/deb/$script" "$stage/DEBIAN/"; done
(cd "$stage" && find etc -type f | sort | sed 's|^|/|') > "$stage/DEBIAN/conffiles"

# Depends: from the libraries the binaries load (dpkg-shlibdeps reads a debian/control).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debian"
printf 'Source: nnd\n\nPackage: nnd\nArchitecture: amd64\n' > "$work/debian/control"
depends=$(cd "$work" && dpkg-shlibdeps -O -e"$OLDPWD/$stage/usr/bin/nnd" -e"$OLDPWD/$stage/usr/bin/nnctl" 2>/dev/null \
    | sed -n 's/^shlibs:Depends=//p')
# sysusers/tmpfiles/deb-systemd-helper are run by the maintainer scripts.
depends="$depends, systemd, init-system-helpers (>= 1.52)"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" packaging/deb/control.in \
    > "$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
    > "$stage/DEBIAN/md5sums"

deb="$out/nnd_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "built $deb ($(du -h "$deb" | cut -f1)); Depends: $depends"
echo "binaries: nnd $(du -h "$stage/usr/bin/nnd" | cut -f1), nnctl $(du -h "$stage/usr/bin/nnctl" | cut -f1)"
if [ "${LINTIAN:-yes}" != no ] && command -v lintian >/dev/null; then
    # Errors and warnings fail the package; info tags are printed for the record.
    lintian --info --display-info --fail-on error,warning "$deb"
    echo "lintian: no errors or warnings"
fi
