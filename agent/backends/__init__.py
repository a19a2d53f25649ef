"""Windows and macOS backends. They implement the Protocols in ``agent.sources`` and import
their OS libraries (ctypes.windll, pyobjc) only inside functions. Neither has yet run on a real
Windows or macOS machine: their logic is unit-tested with the OS calls faked behind a seam."""

__all__: list[str] = []
