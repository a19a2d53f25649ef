<#
.SYNOPSIS
    Install the Vigil agent for every user of this Windows PC.

.DESCRIPTION
    UNTESTED ON A REAL WINDOWS MACHINE: written against the documented cmdlets, never run
    (see installer/windows/README.md).

    Installs:
      %ProgramFiles%\Vigil\venv              a virtualenv with vigil[agent]
      %ProgramFiles%\Vigil\vigil_session.py  runs the agent in each session; enrols the device
      %ProgramData%\Vigil\agent.toml, ca.crt collector address and CA (users: read)
      %ProgramData%\Vigil\enrol.toml         the enrolment token (SYSTEM and Administrators only)
      %ProgramData%\Vigil\device             the device identity, enrolled ONCE, here, at install;
                                             device.key: SYSTEM and Administrators only (the
                                             uplink relay is its one reader); the certificate,
                                             CA and device.json: users may read
      %ProgramData%\Vigil\sessions\<user>    each user's spool and state (outside the profile, so
                                             Shared PC profile deletion loses nothing)
      Task Scheduler \Vigil\Vigil Agent      at every logon, in that user's session (keyboard and
                                             window hooks do not work from a session-0 service)
      Task Scheduler \Vigil\Vigil Enrol      as SYSTEM, at startup and every 15 minutes, until the
                                             device is enrolled (an offline install catches up)
      Task Scheduler \Vigil\Vigil Uplink     as SYSTEM, at startup: python -m agent.relay holds the
                                             device key and relays every session's stream over
                                             the named pipe \\.\pipe\vigil-uplink

    Needs Python 3.11+ installed for all users first (see README.md), and an elevated prompt.
    Intune runs Win32 app installs in 32-bit PowerShell; the script relaunches itself in the
    64-bit one (Sysnative) so that %ProgramFiles% and Python are the real ones.

.EXAMPLE
    powershell.exe -ExecutionPolicy Bypass -File install.ps1 -Collector vigil.school.uk:7443 `
        -TokenFile token.txt -CaFile ca.crt -Wheel vigil-0.1.0-py3-none-any.whl
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string]$Collector,
    [string]$Enroll = "",
    [string]$Token = "",
    [string]$TokenFile = "",
    [Parameter(Mandatory = $true)][string]$CaFile,
    [string]$Wheel = "",
    [string]$Source = "vigil",
    [string]$Python = "",
    [string]$InstallDir = (Join-Path $env:ProgramFiles "Vigil"),
    [string]$ConfigDir = (Join-Path $env:ProgramData "Vigil"),
    [switch]$NoEnrol
)

Set-StrictMode -Version Latest
$ErrorActionPreference = "Stop"

# --- 64-bit PowerShell --------------------------------------------------------------------
# A 32-bit PowerShell on 64-bit Windows (Intune's Win32 app installs) sees "Program Files (x86)"
# as the ProgramFiles folder and a redirected registry; PROCESSOR_ARCHITEW6432 is set only there.
# Relaunch in the native PowerShell through Sysnative (the WOW64 alias of System32), passing
# the same parameters; defaults such as -InstallDir are recomputed in the 64-bit process.
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

function Stop-WithError([string]$Message) {
    [Console]::Error.WriteLine("install.ps1: $Message")
    exit 2
}

function Invoke-Checked([string]$Exe, [string[]]$Arguments) {
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) { Stop-WithError "'$Exe $($Arguments -join ' ')' failed with exit $LASTEXITCODE" }
}

# The device key: SYSTEM and Administrators only, inheritance removed (the uplink relay, running
# as SYSTEM, is its one reader; agent.relay checks this again when it starts). The public parts
# of the identity: Users may read them (the device folder gives files no inherited Users access).
function Protect-DeviceIdentity([string]$DeviceDir) {
    $deviceKey = Join-Path $DeviceDir "device.key"
    if (-not (Test-Path -LiteralPath $deviceKey)) { return }
    Invoke-Checked "icacls.exe" @($deviceKey, "/inheritance:r", "/grant:r", "*S-1-5-18:F", "*S-1-5-32-544:F")
    foreach ($name in @("device.json", "device.crt", "ca.crt", "rules.pub")) {
        $public = Join-Path $DeviceDir $name
        if (Test-Path -LiteralPath $public) { Invoke-Checked "icacls.exe" @($public, "/grant", "*S-1-5-32-545:R") }
    }
}

# --- checks -------------------------------------------------------------------------------
$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    Stop-WithError "run from an elevated PowerShell (Run as administrator), or deploy through Intune/GPO as SYSTEM"
}
if ($Collector -notmatch '^[^:\s]+:\d+$') { Stop-WithError "-Collector: expected HOST:PORT, got '$Collector'" }
if (-not $Enroll) { $Enroll = ($Collector -replace ':\d+$', '') + ":7444" }
if ($Enroll -notmatch '^[^:\s]+:\d+$') { Stop-WithError "-Enroll: expected HOST:PORT, got '$Enroll'" }
if ($TokenFile) {
    if (-not (Test-Path -LiteralPath $TokenFile -PathType Leaf)) { Stop-WithError "-TokenFile: no such file: $TokenFile" }
    $Token = (Get-Content -LiteralPath $TokenFile -Raw).Trim()
}
if (-not $Token) { Stop-WithError "-Token or -TokenFile is required: run 'vigil-collector token create' on the collector" }
if ($Token -notmatch '^[A-Za-z0-9._~+/=:-]+$') { Stop-WithError "-Token: unexpected characters; paste the token exactly as printed" }
if (-not (Test-Path -LiteralPath $CaFile -PathType Leaf)) { Stop-WithError "-CaFile: no such file: $CaFile" }
if (-not (Select-String -LiteralPath $CaFile -Pattern "BEGIN CERTIFICATE" -Quiet)) { Stop-WithError "-CaFile: $CaFile is not a PEM certificate" }
if ($Wheel -and -not (Test-Path -LiteralPath $Wheel -PathType Leaf)) { Stop-WithError "-Wheel: no such file: $Wheel" }
$sessionPy = Join-Path $PSScriptRoot "..\vigil_session.py"
if (-not (Test-Path -LiteralPath $sessionPy)) { Stop-WithError "missing ${sessionPy}: run this script from a full copy of installer\" }

if (-not $Python) {
    # Newest first by minor version (a name sort puts Python39 above Python313); the 64-bit
    # folders only ("Python313-32" is a 32-bit build).
    $candidates = @(Get-ChildItem -Path (Join-Path $env:ProgramFiles "Python3*\python.exe") -ErrorAction SilentlyContinue |
        Where-Object { $_.Directory.Name -match '^Python3(\d+)$' } |
        Sort-Object -Property @{ Expression = { [int]($_.Directory.Name -replace '^Python3', '') } } -Descending |
        Select-Object -ExpandProperty FullName)
    if ($candidates.Count -gt 0) { $Python = $candidates[0] }
}
if (-not $Python) { Stop-WithError "no Python found under $env:ProgramFiles\Python3*: install Python 3.11+ for all users, or pass -Python C:\path\python.exe" }
& $Python -c "import sys; sys.exit(sys.version_info < (3, 11))"
if ($LASTEXITCODE -ne 0) { Stop-WithError "$Python is not Python 3.11 or newer" }

# --- virtualenv ---------------------------------------------------------------------------
Write-Host "==> virtualenv in $InstallDir\venv"
New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
$venvPython = Join-Path $InstallDir "venv\Scripts\python.exe"
if (-not (Test-Path -LiteralPath $venvPython)) { Invoke-Checked $Python @("-m", "venv", (Join-Path $InstallDir "venv")) }
Invoke-Checked $venvPython @("-m", "pip", "install", "-q", "--upgrade", "pip")
if ($Wheel) {
    $wheelPath = (Resolve-Path -LiteralPath $Wheel).Path
    Invoke-Checked $venvPython @("-m", "pip", "install", "-q", "${wheelPath}[agent]")
} else {
    Invoke-Checked $venvPython @("-m", "pip", "install", "-q", "${Source}[agent]")
}
Copy-Item -LiteralPath $sessionPy -Destination (Join-Path $InstallDir "vigil_session.py") -Force

# --- config -------------------------------------------------------------------------------
Write-Host "==> config in $ConfigDir"
New-Item -ItemType Directory -Force -Path $ConfigDir | Out-Null
# Users may read (each session's agent reads agent.toml and the device identity) but not write.
Invoke-Checked "icacls.exe" @($ConfigDir, "/inheritance:r", "/grant:r",
    "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F", "*S-1-5-32-545:(OI)(CI)RX")
$caDest = Join-Path $ConfigDir "ca.crt"
Copy-Item -LiteralPath $CaFile -Destination $caDest -Force
$stamp = (Get-Date).ToUniversalTime().ToString("yyyy-MM-ddTHH:mmZ")
$toml = @"
# Vigil agent, written by installer\windows\install.ps1 on $stamp.
# Every key is documented in docs/configuration.md.
[agent]
collector = "$Collector"
"@
$enrolToml = @"
# Vigil device enrolment (SYSTEM and Administrators only), written by installer\windows\install.ps1.
[enroll]
server = "$Enroll"
token = "$Token"
ca = '$caDest'
"@
# TOML must be UTF-8 without a byte-order mark (Windows PowerShell 5.1's -Encoding UTF8 adds one).
$utf8 = New-Object System.Text.UTF8Encoding $false
[System.IO.File]::WriteAllText((Join-Path $ConfigDir "agent.toml"), $toml, $utf8)
$enrolPath = Join-Path $ConfigDir "enrol.toml"
[System.IO.File]::WriteAllText($enrolPath, $enrolToml, $utf8)
Invoke-Checked "icacls.exe" @($enrolPath, "/inheritance:r", "/grant:r", "*S-1-5-18:F", "*S-1-5-32-544:F")

# --- device identity and session folders --------------------------------------------------
$deviceDir = Join-Path $ConfigDir "device"
$sessionsDir = Join-Path $ConfigDir "sessions"
New-Item -ItemType Directory -Force -Path $deviceDir | Out-Null
New-Item -ItemType Directory -Force -Path $sessionsDir | Out-Null
# device: SYSTEM and Administrators full control, inherited by every file enrolment writes;
# Users may list and traverse this folder only (RX without (OI)(CI)), so no file written here
# later, device.key least of all, is readable by Users until it is granted one by one
# (Protect-DeviceIdentity below, or the uplink relay when the enrol task enrols later).
Invoke-Checked "icacls.exe" @($deviceDir, "/inheritance:r", "/grant:r",
    "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F", "*S-1-5-32-545:RX")
# sessions: a user may create their own folder (AD = add subdirectory, X = traverse, on this
# folder only) but not list or open the others; CREATOR OWNER (S-1-3-0) gets full control
# of the folder it creates.
Invoke-Checked "icacls.exe" @($sessionsDir, "/inheritance:r", "/grant:r",
    "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F", "*S-1-5-32-545:(AD,X)", "*S-1-3-0:(OI)(CI)(IO)F")
$sessionPyDest = Join-Path $InstallDir "vigil_session.py"
$agentToml = Join-Path $ConfigDir "agent.toml"
if (-not $NoEnrol) {
    Write-Host "==> enrolling this device (once, for every user)"
    & $venvPython $sessionPyDest --enrol-device --config $agentToml
    if ($LASTEXITCODE -ne 0) {
        Write-Warning "enrolment failed (collector unreachable?): the \Vigil\Vigil Enrol task retries every 15 minutes; agents keep captures in their spool until then"
    }
}
# Also on a re-install over an enrolled device (its key may predate the relay).
Protect-DeviceIdentity $deviceDir

# --- logon task ---------------------------------------------------------------------------
Write-Host "==> scheduled task \Vigil\Vigil Agent (at logon, every user, in their session)"
$pythonw = Join-Path $InstallDir "venv\Scripts\pythonw.exe"
$arguments = "`"$(Join-Path $InstallDir 'vigil_session.py')`" --config `"$(Join-Path $ConfigDir 'agent.toml')`""
$action = New-ScheduledTaskAction -Execute $pythonw -Argument $arguments -WorkingDirectory $InstallDir
$trigger = New-ScheduledTaskTrigger -AtLogOn
# S-1-5-32-545 = BUILTIN\Users, by SID so it also works on non-English Windows.
$taskPrincipal = New-ScheduledTaskPrincipal -GroupId "S-1-5-32-545" -RunLevel Limited
# Priority 5 (normal); Task Scheduler's default, 7, is below normal.
$settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries `
    -ExecutionTimeLimit ([TimeSpan]::Zero) -MultipleInstances Parallel -StartWhenAvailable `
    -RestartCount 3 -RestartInterval (New-TimeSpan -Minutes 1) -Priority 5
Register-ScheduledTask -TaskName "Vigil Agent" -TaskPath "\Vigil\" -Action $action -Trigger $trigger `
    -Principal $taskPrincipal -Settings $settings -Force `
    -Description "Vigil safeguarding agent: runs in each user's session; 'vigil-agent status' shows what it watches." | Out-Null

Write-Host "==> scheduled task \Vigil\Vigil Enrol (as SYSTEM, until the device is enrolled)"
$enrolArgs = "`"$sessionPyDest`" --enrol-device --config `"$agentToml`""
$enrolAction = New-ScheduledTaskAction -Execute $venvPython -Argument $enrolArgs -WorkingDirectory $InstallDir
$enrolTriggers = @(
    (New-ScheduledTaskTrigger -AtStartup),
    (New-ScheduledTaskTrigger -Once -At (Get-Date) -RepetitionInterval (New-TimeSpan -Minutes 15))
)
$enrolPrincipal = New-ScheduledTaskPrincipal -UserId "SYSTEM" -LogonType ServiceAccount -RunLevel Highest
$enrolSettings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries `
    -StartWhenAvailable -MultipleInstances IgnoreNew -ExecutionTimeLimit (New-TimeSpan -Minutes 10)
Register-ScheduledTask -TaskName "Vigil Enrol" -TaskPath "\Vigil\" -Action $enrolAction -Trigger $enrolTriggers `
    -Principal $enrolPrincipal -Settings $enrolSettings -Force `
    -Description "Vigil: enrols this device with the collector once; does nothing once enrolled." | Out-Null

Write-Host "==> scheduled task \Vigil\Vigil Uplink (as SYSTEM, at startup: the only reader of the device key)"
# UNTESTED ON WINDOWS like the rest; agent.relay refuses to start unless it runs as SYSTEM.
$relayArgs = "-m agent.relay --device-dir `"$deviceDir`""
$relayAction = New-ScheduledTaskAction -Execute $venvPython -Argument $relayArgs -WorkingDirectory $InstallDir
# At startup, and every 5 minutes with IgnoreNew: a relay that died is started again (the
# restart settings cover a failed start; a second copy would find the pipe taken and exit).
$relayTriggers = @(
    (New-ScheduledTaskTrigger -AtStartup),
    (New-ScheduledTaskTrigger -Once -At (Get-Date) -RepetitionInterval (New-TimeSpan -Minutes 5))
)
$relayPrincipal = New-ScheduledTaskPrincipal -UserId "SYSTEM" -LogonType ServiceAccount -RunLevel Highest
# No time limit (it runs for as long as the machine does); priority 5 (normal), like the agent.
$relaySettings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries `
    -ExecutionTimeLimit ([TimeSpan]::Zero) -MultipleInstances IgnoreNew -StartWhenAvailable `
    -RestartCount 999 -RestartInterval (New-TimeSpan -Minutes 1) -Priority 5
Register-ScheduledTask -TaskName "Vigil Uplink" -TaskPath "\Vigil\" -Action $relayAction -Trigger $relayTriggers `
    -Principal $relayPrincipal -Settings $relaySettings -Force `
    -Description "Vigil uplink relay: holds this device's key and relays each session's captures to the collector, named by the session's Windows account." | Out-Null
Start-ScheduledTask -TaskPath "\Vigil\" -TaskName "Vigil Uplink"

Write-Host "installed: the agent starts at each user's next logon."
Write-Host "check a session with: `"$InstallDir\venv\Scripts\vigil-agent.exe`" install-check"
exit 0
