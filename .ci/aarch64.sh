# The aarch64 build of .ci/run (sourced by it: uses its step/die/run_tests).
#
# Cross-compiles the extension modules from the sdist with Debian's
# gcc-aarch64-linux-gnu, against Debian's arm64 Python (headers and
# sysconfig from its arm64 packages, fetched with apt-get download and
# unpacked into a sysroot, never installed), and runs tests on
# qemu-aarch64-static with the arm64 interpreter of that sysroot and
# NumPy's manylinux aarch64 wheel.  Without binfmt_misc the kernel cannot
# run an arm64 binary by itself, so sys.executable is a shell script that
# starts qemu (qemu's -0 sets the interpreter's argv[0] to it): tests that
# start child interpreters (subprocess with sys.executable) work as on a
# native machine.
#
#   aarch64_sysroot DIR      the arm64 Python, its libraries, libgomp
#   aarch64_build DIR SDIST  the linux_aarch64 wheel, into DIR/dist
#   aarch64_install DIR      the wheel, NumPy and the test tools into the sysroot
#   aarch64_python DIR       prints the path of the interpreter wrapper

AARCH64_PYTHON_VERSION=3.11

# What runs on qemu (10 to 30 times slower than native): the tests of every
# kernel family's results, each ISA-independent check included (conv and its
# padding, choices and errors, the fused conv + pool and conv + ReLU kernels,
# grouped and depthwise conv, batch norm, pooling, dense, activation, loss,
# optimisers) and dispatch/show_config.  Left out for
# CI's time (the x86-64 builds run them; they hold no aarch64-specific code
# path): the bad-input battery and kernel edge sweep (minutes natively),
# concurrency, layers, models, compat, plans,
# resumable training, and everything that computes no result (benchmarks,
# RSS, CLI, datasets, files, tuning's cache).
AARCH64_TESTS=(test_activation test_config test_conv test_conv_choices test_conv_errors
    test_conv_padding test_conv_relu test_fused test_grouped_conv test_linear test_loss
    test_norm test_optim test_pool test_pool_options)
mapfile -t AARCH64_PYTEST_ARGS < <(only_tests "${AARCH64_TESTS[@]}")
# Deselected, for time and flakiness under emulation (the x86-64 builds run
# them): the GIL-release tests (timing: another thread's clock readings must
# fall inside one kernel call; 127 s on qemu), thread-count invariance (106 s
# for one fused case) and conv's mostly-padding sweep (79 s).
AARCH64_PYTEST_ARGS+=(-k "not gil_is_released and not do_not_depend_on_the_thread_count and \
not mostly_padding_go_tap_by_tap")

aarch64_packages() {
    # Runtime closure of the arm64 interpreter (+ headers, + libgomp for the
    # OpenMP build), without dpkg's own and development packages.
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
            --no-replaces --no-enhances "python$AARCH64_PYTHON_VERSION:arm64" \
            "libpython$AARCH64_PYTHON_VERSION-dev:arm64" libgomp1:arm64 libstdc++6:arm64 \
        | grep -E '^[a-z0-9][a-z0-9.+-]*:arm64$' | sort -u \
        | grep -vE '^(dpkg|tar|install-info|libc-dev-bin|rpcsvc-proto|linux-libc-dev|[a-z0-9.+-]*-dev):arm64$'
    echo "libpython$AARCH64_PYTHON_VERSION-dev:arm64"
}

aarch64_sysroot() {
    local dir=$1 sysroot=$1/sysroot
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        dpkg --add-architecture arm64
    fi
    apt-get update -qq
    mkdir -p "$dir/debs"
    rm -rf "$sysroot"
    # apt-get download writes into the current directory.
    (cd "$dir/debs" && apt-get download -qq $(aarch64_packages) 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
    [ -x "$sysroot/usr/bin/python$AARCH64_PYTHON_VERSION" ] || die "no arm64 python in $sysroot"
    # The wrapper that stands in for binfmt_misc.
    cat >"$sysroot/usr/bin/python3-qemu" <<EOF
#!/bin/sh
exec qemu-aarch64-static -L "$sysroot" -0 "$sysroot/usr/bin/python3-qemu" "$sysroot/usr/bin/python$AARCH64_PYTHON_VERSION" "\$@"
EOF
    chmod +x "$sysroot/usr/bin/python3-qemu"
    "$sysroot/usr/bin/python3-qemu" -c 'import platform, sys; assert platform.machine() == "aarch64"; print("arm64", sys.version.split()[0], "on qemu")'
}

aarch64_python() { echo "$1/sysroot/usr/bin/python3-qemu"; }

aarch64_build() {
    local dir=$1 sdist=$2 sysroot=$1/sysroot venv=$1/venv-build
    local version=${AARCH64_NUMPY:-2.4.6}
    # The arm64 interpreter's build configuration (compiler aarch64-linux-gnu-gcc,
    # extension suffix, flags), its include paths pointed into the sysroot.
    mkdir -p "$dir/sysconfig"
    local data=_sysconfigdata__linux_aarch64-linux-gnu
    sed "s|'/usr/include/python$AARCH64_PYTHON_VERSION'|'$sysroot/usr/include/python$AARCH64_PYTHON_VERSION'|g" \
        "$sysroot/usr/lib/python$AARCH64_PYTHON_VERSION/_sysconfigdata__aarch64-linux-gnu.py" \
        >"$dir/sysconfig/$data.py"
    new_venv "$venv"
    "$venv/bin/pip" install -q "setuptools>=77" "Cython>=3.1" "numpy==$version" build
    # NumPy's headers come from the build machine's NumPy: they must be the
    # arm64 wheel's, byte for byte.
    rm -rf "$dir/numpy-wheel" && mkdir -p "$dir/numpy-wheel"
    "$venv/bin/pip" download -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
        --platform manylinux2014_aarch64 --python-version "$AARCH64_PYTHON_VERSION" \
        --implementation cp -d "$dir/numpy-wheel" "numpy==$version"
    (cd "$dir/numpy-wheel" && "$venv/bin/python" -m zipfile -e numpy-*.whl unpacked)
    diff -r "$("$venv/bin/python" -c 'import numpy; print(numpy.get_include())')" \
        "$dir/numpy-wheel/unpacked/numpy/_core/include" \
        || die "the host's NumPy $version headers differ from the aarch64 wheel's"
    rm -rf "$dir/dist"
    # -I the sysroot's include dir: Debian's pyconfig.h picks the arm64 one
    # from <aarch64-linux-gnu/python3.X/pyconfig.h>.
    env _PYTHON_HOST_PLATFORM=linux-aarch64 _PYTHON_SYSCONFIGDATA_NAME=$data \
        PYTHONPATH="$dir/sysconfig" CFLAGS="-I$sysroot/usr/include" \
        "$venv/bin/python" -m build --wheel --no-isolation --outdir "$dir/dist" "$sdist" \
        >"$dir/build.log" 2>&1 || { tail -40 "$dir/build.log"; die "aarch64 cross-build failed"; }
    grep -E "aarch64-linux-gnu-gcc .*_conv_baseline\.c" "$dir/build.log" | head -1
    ls -l "$dir"/dist/*.whl
}

aarch64_install() {
    local dir=$1 sysroot=$1/sysroot venv=$1/venv-build
    local version=${AARCH64_NUMPY:-2.4.6}
    # NumPy's aarch64 wheel and the pure-Python test tools, for the arm64
    # interpreter, by the build machine's pip.
    "$venv/bin/pip" install -q --target "$sysroot/usr/lib/python3/dist-packages" --upgrade \
        --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
        --platform linux_aarch64 --python-version "$AARCH64_PYTHON_VERSION" --implementation cp \
        "numpy==$version" pytest hypothesis threadpoolctl "$dir"/dist/cnnext-*.whl
    (cd "$dir" && "$(aarch64_python "$dir")" -c "import cnnext; cnnext.show_config()")
}
