<#
.SYNOPSIS
    Install the crmcluster node agent on a Sage CRM web server, as a Windows service.

.DESCRIPTION
    1. creates a Python virtual environment under -InstallDir and installs crmcluster with its
       "windows" extra (pywin32) into it;
    2. writes the agent's settings to %ProgramData%\crmcluster\.env, readable only by SYSTEM, the
       Administrators and the service account (the agent token is a secret);
    3. opens the agent's port in Windows Firewall for the controller's address only;
    4. installs the service (crmcluster agent install-service: automatic delayed start, restart
       on failure, logs under %ProgramData%\crmcluster\logs and in the Event Log) and starts it.

    Run it in an elevated PowerShell on each web server. Nothing here needs a shell of its own:
    every program is called with its arguments.

.EXAMPLE
    .\install-agent.ps1 -Name crm1 -ControllerAddress 10.0.0.5 -ControllerUrl http://10.0.0.5:8700 `
        -AgentToken (Read-Host -AsSecureString) -Roles database,replication_engine -Package C:\CRMSetup\crmcluster.whl
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [ValidatePattern('^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$')] [string] $Name,
    [Parameter(Mandatory)] [System.Net.IPAddress] $ControllerAddress,
    [Parameter(Mandatory)] [uri] $ControllerUrl,
    [Parameter(Mandatory)] [securestring] $AgentToken,
    [string] $Package = 'crmcluster',
    [string] $Python = 'py',
    [string] $InstallDir = "$env:ProgramFiles\crmcluster",
    [int] $Port = 8701,
    [string] $Roles = '',
    [string] $CrmDbUrl = '',
    [string] $BackupRoot = 'D:\CRMBackups',
    [string] $SqlBackupDir = '',
    [string] $ServiceAccount = '',
    [securestring] $ServicePassword
)
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$DataDir = Join-Path $env:ProgramData 'crmcluster'
$Venv = Join-Path $InstallDir 'venv'
$VenvPython = Join-Path $Venv 'Scripts\python.exe'
$Crmcluster = Join-Path $Venv 'Scripts\crmcluster.exe'

function Invoke-Checked([string] $Program, [string[]] $Arguments) {
    & $Program @Arguments
    if ($LASTEXITCODE -ne 0) { throw "$Program exited with $LASTEXITCODE" }
}

function ConvertFrom-Secure([securestring] $Secret) {
    $bstr = [Runtime.InteropServices.Marshal]::SecureStringToBSTR($Secret)
    try { [Runtime.InteropServices.Marshal]::PtrToStringBSTR($bstr) }
    finally { [Runtime.InteropServices.Marshal]::ZeroFreeBSTR($bstr) }
}

# 1. The virtual environment and crmcluster with pywin32 -------------------------------------------
New-Item -ItemType Directory -Force -Path $InstallDir, $DataDir, (Join-Path $DataDir 'logs') | Out-Null
if (-not (Test-Path $VenvPython)) { Invoke-Checked $Python @('-3', '-m', 'venv', $Venv) }
Invoke-Checked $VenvPython @('-m', 'pip', 'install', '--upgrade', 'pip')
Invoke-Checked $VenvPython @('-m', 'pip', 'install', "$Package[windows]")
Invoke-Checked $VenvPython @((Join-Path $Venv 'Scripts\pywin32_postinstall.py'), '-install')

# 2. The settings, readable by SYSTEM, the Administrators and the service account only -----------
$EnvFile = Join-Path $DataDir '.env'
$settings = @(
    "CRMCLUSTER_NAME=$Name",
    'CRMCLUSTER_DRIVER=windows',
    "CRMCLUSTER_DATA_DIR=$DataDir",
    "CRMCLUSTER_CONTROLLER_URL=$ControllerUrl",
    "CRMCLUSTER_AGENT_TOKEN=$(ConvertFrom-Secure $AgentToken)",
    "CRMCLUSTER_LISTEN_PORT=$Port",
    "CRMCLUSTER_SANDBOX_ROLES=$Roles",
    "CRMCLUSTER_BACKUP_ROOT=$BackupRoot"
)
if ($CrmDbUrl) { $settings += "CRMCLUSTER_CRM_DB_URL=$CrmDbUrl" }
if ($SqlBackupDir) { $settings += "CRMCLUSTER_WINDOWS_SQL_BACKUP_DIR=$SqlBackupDir" }
if ($ServiceAccount) { $settings += "CRMCLUSTER_WINDOWS_SERVICE_ACCOUNT=$ServiceAccount" }
Set-Content -Path $EnvFile -Value $settings -Encoding UTF8
$grants = @('*S-1-5-18:(F)', '*S-1-5-32-544:(F)')   # SYSTEM, Administrators
if ($ServiceAccount) { $grants += "${ServiceAccount}:(R)" }
Invoke-Checked 'icacls.exe' (@($DataDir, '/inheritance:r', '/grant:r') + ($grants | ForEach-Object { $_ -replace '\(F\)$', '(OI)(CI)(F)' -replace '\(R\)$', '(OI)(CI)(M)' }))
Invoke-Checked 'icacls.exe' (@($EnvFile, '/inheritance:r', '/grant:r') + $grants)

# 3. The firewall: the agent's port, for the controller's address only ---------------------------
Get-NetFirewallRule -DisplayName 'crmcluster agent' -ErrorAction SilentlyContinue | Remove-NetFirewallRule
New-NetFirewallRule -DisplayName 'crmcluster agent' -Direction Inbound -Action Allow -Protocol TCP `
    -LocalPort $Port -RemoteAddress $ControllerAddress.ToString() -Profile Domain,Private | Out-Null

# 4. The service ------------------------------------------------------------------------------------
$install = @('agent', 'install-service')
if ($ServiceAccount) {
    $install += @('--account', $ServiceAccount)
    # The password goes to the Service Control Manager through the environment, not a command line.
    $env:CRMCLUSTER_SERVICE_PASSWORD = ConvertFrom-Secure $ServicePassword
}
try { Invoke-Checked $Crmcluster $install }
finally { Remove-Item Env:\CRMCLUSTER_SERVICE_PASSWORD -ErrorAction SilentlyContinue }
Start-Service -Name 'crmcluster-agent'
Get-Service -Name 'crmcluster-agent'
