/*
 * vigil-agent: the executable of "Vigil Agent.app" (bundle id org.vigil.agent).
 *
 * UNTESTED ON A REAL MAC. Compiled and exercised on Linux by
 * tests/installer/test_macos_launcher.py; build and sign it on a Mac with build.sh.
 *
 * Why this exists: macOS privacy permissions (TCC: Accessibility, Input Monitoring, Screen
 * Recording...) are granted to the code signature of the process's main executable. A launcher
 * that exec()s python3 is useless (after exec the process IS python, and the grant would cover
 * every Python script on the Mac). So this program EMBEDS the interpreter: it links against the
 * Python framework / libpython of the install and runs the agent script in-process, so the
 * process's identity stays this signed launcher. No shell, no system(), no exec, no fork.
 *
 * What it does:
 *   - checks the venv (VIGIL_VENV, default /Library/Vigil/venv: bin/python3 and pyvenv.cfg) and
 *     the session script (VIGIL_SCRIPT, default /Library/Vigil/vigil_session.py) exist;
 *   - builds a PEP 587 PyConfig with program_name/executable = the venv's python, so getpath
 *     finds pyvenv.cfg and sys.prefix is the venv (its site-packages hold the agent package);
 *   - ignores PYTHON* environment variables and the user site-packages (-E -s) and does not put
 *     the script's directory on sys.path (safe_path, Python 3.11+): otherwise anyone able to run
 *     the app could inject code (PYTHONPATH=.../sitecustomize.py) into a process that holds the
 *     agent's privacy permissions;
 *   - sys.argv = [script, <launcher's own arguments unchanged>]; the arguments are NOT parsed as
 *     Python options (parse_argv = 0), so "vigil-agent -c code" cannot run arbitrary code;
 *   - Py_InitializeFromConfig, Py_RunMain; returns the script's exit status.
 * Any failure before the script runs prints "vigil-agent: <what failed>..." and exits 70
 * (EX_SOFTWARE).
 *
 * Compile-time defines: VIGIL_VENV, VIGIL_SCRIPT (string literals).
 * VIGIL_LAUNCHER_TESTING (tests only): also honour the environment variable VIGIL_LAUNCHER_VENV
 * as the venv path. Release builds (build.sh) never define it, so the override is compiled out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef VIGIL_VENV
#define VIGIL_VENV "/Library/Vigil/venv"
#endif
#ifndef VIGIL_SCRIPT
#define VIGIL_SCRIPT "/Library/Vigil/vigil_session.py"
#endif

#define EXIT_LAUNCHER_FAILURE 70 /* EX_SOFTWARE */
#define PROG "vigil-agent"

static int fail_status(PyConfig *config, const char *what, PyStatus status)
{
    fprintf(stderr, PROG ": %s failed: %s%s%s\n", what,
            status.func ? status.func : "", status.func ? ": " : "",
            status.err_msg ? status.err_msg : "unknown error");
    PyConfig_Clear(config);
    return EXIT_LAUNCHER_FAILURE;
}

static char *join_path(const char *dir, const char *leaf)
{
    size_t n = strlen(dir) + 1 + strlen(leaf) + 1;
    char *out = malloc(n);
    if (out != NULL)
        snprintf(out, n, "%s/%s", dir, leaf);
    return out;
}

int main(int argc, char **argv)
{
    const char *venv = VIGIL_VENV;
    const char *script = VIGIL_SCRIPT;
#ifdef VIGIL_LAUNCHER_TESTING
    const char *venv_override = getenv("VIGIL_LAUNCHER_VENV");
    if (venv_override != NULL && venv_override[0] != '\0')
        venv = venv_override;
#endif

    char *python = join_path(venv, "bin/python3");
    char *pyvenv_cfg = join_path(venv, "pyvenv.cfg");
    if (python == NULL || pyvenv_cfg == NULL) {
        fprintf(stderr, PROG ": out of memory\n");
        return EXIT_LAUNCHER_FAILURE;
    }
    if (access(pyvenv_cfg, R_OK) != 0 || access(python, X_OK) != 0) {
        fprintf(stderr,
                PROG ": the Vigil virtualenv is missing or incomplete: %s "
                "(need %s and %s); reinstall Vigil\n", venv, pyvenv_cfg, python);
        free(python);
        free(pyvenv_cfg);
        return EXIT_LAUNCHER_FAILURE;
    }
    free(pyvenv_cfg);
    if (access(script, R_OK) != 0) {
        fprintf(stderr, PROG ": the Vigil session script is missing: %s; reinstall Vigil\n",
                script);
        free(python);
        return EXIT_LAUNCHER_FAILURE;
    }

    PyStatus status;
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.parse_argv = 0;          /* our arguments belong to the script, not to Python */
    config.use_environment = 0;     /* -E: ignore PYTHONPATH, PYTHONHOME, PYTHONINSPECT... */
    config.user_site_directory = 0; /* -s: no ~/.local site-packages */
#if PY_VERSION_HEX >= 0x030B0000
    config.safe_path = 1;           /* -P: the script's directory is not put on sys.path */
#endif

    status = PyConfig_SetBytesString(&config, &config.program_name, python);
    if (PyStatus_Exception(status)) {
        free(python);
        return fail_status(&config, "setting program_name to the venv's python", status);
    }
    status = PyConfig_SetBytesString(&config, &config.executable, python);
    free(python);
    if (PyStatus_Exception(status))
        return fail_status(&config, "setting executable to the venv's python", status);
    status = PyConfig_SetBytesString(&config, &config.run_filename, script);
    if (PyStatus_Exception(status))
        return fail_status(&config, "setting the session script", status);

    /* sys.argv = [script, argv[1], argv[2], ...] */
    char **script_argv = calloc((size_t)argc + 1, sizeof(char *));
    if (script_argv == NULL) {
        PyConfig_Clear(&config);
        fprintf(stderr, PROG ": out of memory\n");
        return EXIT_LAUNCHER_FAILURE;
    }
    script_argv[0] = (char *)script;
    for (int i = 1; i < argc; i++)
        script_argv[i] = argv[i];
    status = PyConfig_SetBytesArgv(&config, argc, script_argv);
    free(script_argv);
    if (PyStatus_Exception(status))
        return fail_status(&config, "setting sys.argv", status);

    status = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(status)) {
        if (PyStatus_IsExit(status)) {
            PyConfig_Clear(&config);
            return status.exitcode;
        }
        return fail_status(&config, "initialising the embedded Python", status);
    }
    PyConfig_Clear(&config);
    return Py_RunMain(); /* runs run_filename, finalizes, returns its exit status */
}
