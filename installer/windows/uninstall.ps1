<#
.SYNOPSIS
    Remove the Vigil agent installed by install.ps1.

.DESCRIPTION
    UNTESTED ON A REAL WINDOWS MACHINE (see installer/windows/README.md).

    Stops and removes the \Vigil\Vigil Agent, \Vigil\Vigil Enrol and \Vigil\Vigil Uplink (the
    SYSTEM uplink relay that holds the device key) scheduled tasks, deletes
    %ProgramFiles%\Vigil and (unless -KeepConfig) the configuration in %ProgramData%\Vigil. The
    device identity (%ProgramData%\Vigil\device) and the sessions' unsent captures
    (%ProgramData%\Vigil\sessions) are kept unless -PurgeUserData, which also deletes any
    per-user %LOCALAPPDATA%\vigil-agent left by an older, per-user install.
#>
[CmdletBinding()]
param(
    [string]$InstallDir = (Join-Path $env:ProgramFiles "Vigil"),
    [string]$ConfigDir = (Join-Path $env:ProgramData "Vigil"),
    [switch]$KeepConfig,
    [switch]$PurgeUserData
)

Set-StrictMode -Version Latest
$ErrorActionPreference = "Stop"

# --- 64-bit PowerShell (see install.ps1: Intune runs Win32 app commands in 32-bit PowerShell) ---
if ($env:PROCESSOR_ARCHITEW6432 -and -not [Environment]::Is64BitProcess) {
    $native = Join-Path $env:WINDIR "Sysnative\WindowsPowerShell\v1.0\powershell.exe"
    $relaunch = @("-NoProfile", "-ExecutionPolicy", "Bypass", "-File", $PSCommandPath)
    foreach ($name in $PSBoundParameters.Keys) {
        $value = $PSBoundParameters[$name]
        if ($value -is [System.Management.Automation.SwitchParameter]) {
            if ($value.IsPresent) { $relaunch += "-$name" }
        } else {
            $relaunch += "-$name"
            $relaunch += [string]$value
        }
    }
    & $native @relaunch
    exit $LASTEXITCODE
}

$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    [Console]::Error.WriteLine("uninstall.ps1: run from an elevated PowerShell (Run as administrator)")
    exit 2
}

foreach ($taskName in @("Vigil Agent", "Vigil Enrol", "Vigil Uplink")) {
    $task = Get-ScheduledTask -TaskPath "\Vigil\" -TaskName $taskName -ErrorAction SilentlyContinue
    if ($task) {
        Stop-ScheduledTask -TaskPath "\Vigil\" -TaskName $taskName -ErrorAction SilentlyContinue
        Unregister-ScheduledTask -TaskPath "\Vigil\" -TaskName $taskName -Confirm:$false
        Write-Host "removed scheduled task \Vigil\$taskName"
    }
}
# Agents started by the task run as pythonw.exe from our venv, the uplink relay as python.exe:
# stop only those.
$venvDir = Join-Path $InstallDir "venv"
Get-CimInstance Win32_Process -Filter "Name = 'pythonw.exe' OR Name = 'python.exe'" |
    Where-Object { $_.ExecutablePath -and $_.ExecutablePath.StartsWith($venvDir, [StringComparison]::OrdinalIgnoreCase) } |
    ForEach-Object { Stop-Process -Id $_.ProcessId -Force -ErrorAction SilentlyContinue }

if (Test-Path -LiteralPath $InstallDir) {
    if (-not (Test-Path -LiteralPath (Join-Path $InstallDir "vigil_session.py"))) {
        [Console]::Error.WriteLine("uninstall.ps1: $InstallDir does not look like a Vigil install (no vigil_session.py); not removing it")
        exit 2
    }
    Remove-Item -LiteralPath $InstallDir -Recurse -Force
    Write-Host "removed $InstallDir"
}
if (-not $KeepConfig) {
    foreach ($file in @("agent.toml", "enrol.toml", "ca.crt")) {
        $path = Join-Path $ConfigDir $file
        if (Test-Path -LiteralPath $path) { Remove-Item -LiteralPath $path -Force; Write-Host "removed $path" }
    }
}
if ($PurgeUserData) {
    foreach ($dir in @((Join-Path $ConfigDir "device"), (Join-Path $ConfigDir "sessions"))) {
        if (Test-Path -LiteralPath $dir) { Remove-Item -LiteralPath $dir -Recurse -Force; Write-Host "removed $dir" }
    }
    if ((Test-Path -LiteralPath $ConfigDir) -and -not (Get-ChildItem -LiteralPath $ConfigDir -Force)) {
        Remove-Item -LiteralPath $ConfigDir -Force
    }
    Get-ChildItem -Path (Join-Path $env:SystemDrive "Users\*\AppData\Local\vigil-agent") -Directory -ErrorAction SilentlyContinue |
        ForEach-Object { Remove-Item -LiteralPath $_.FullName -Recurse -Force; Write-Host "removed $($_.FullName)" }
}
Write-Host "uninstalled."
exit 0
