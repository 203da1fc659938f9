"""ARM (Raspberry Pi) under emulation: run the runtime and its interpreters in a Debian bookworm arm64 sysroot
under `qemu-aarch64 -cpu cortex-a72|cortex-a76`, check parity against x86, and count instructions per step.

    devices/arm/ci.sh                             everything CI runs (build, prepare, parity tests, counts)
    python -m rnnedge.devices.arm.emulate --help  the pieces one at a time
"""
