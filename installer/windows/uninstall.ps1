<#
.SYNOPSIS
    Remove the Vigil agent installed by install.ps1.

.DESCRIPTION
    UNTESTED ON A REAL WINDOWS MACHINE (see installer/windows/README.md).

    Stops and removes the \Vigil\Vigil Agent scheduled task, deletes %ProgramFiles%\Vigil and
    (unless -KeepConfig) %ProgramData%\Vigil. Each user's agent data dir
    (%LOCALAPPDATA%\vigil-agent: device key, unsent captures) is kept unless -PurgeUserData.
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

$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    [Console]::Error.WriteLine("uninstall.ps1: run from an elevated PowerShell (Run as administrator)")
    exit 2
}

$task = Get-ScheduledTask -TaskPath "\Vigil\" -TaskName "Vigil Agent" -ErrorAction SilentlyContinue
if ($task) {
    Stop-ScheduledTask -TaskPath "\Vigil\" -TaskName "Vigil Agent" -ErrorAction SilentlyContinue
    Unregister-ScheduledTask -TaskPath "\Vigil\" -TaskName "Vigil Agent" -Confirm:$false
    Write-Host "removed scheduled task \Vigil\Vigil Agent"
}
# Agents started by the task run as pythonw.exe from our venv: stop only those.
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
if (-not $KeepConfig -and (Test-Path -LiteralPath $ConfigDir)) {
    Remove-Item -LiteralPath $ConfigDir -Recurse -Force
    Write-Host "removed $ConfigDir"
}
if ($PurgeUserData) {
    Get-ChildItem -Path (Join-Path $env:SystemDrive "Users\*\AppData\Local\vigil-agent") -Directory -ErrorAction SilentlyContinue |
        ForEach-Object { Remove-Item -LiteralPath $_.FullName -Recurse -Force; Write-Host "removed $($_.FullName)" }
}
Write-Host "uninstalled."
exit 0
