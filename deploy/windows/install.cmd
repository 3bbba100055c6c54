@echo off
rem tps-agent for Windows, one-step install. Run it once as Administrator
rem (right-click install.cmd, "Run as administrator"). It copies tps-agent.exe to
rem %ProgramFiles%\tps-agent, keeps config, token and spool in %ProgramData%\tps-agent
rem (readable only by SYSTEM and Administrators) and registers the Windows service
rem "tps-agent" (starts with Windows, restarts on failure). Enroll next, then start it.
setlocal
set "DEST=%ProgramFiles%\tps-agent"
set "DATA=%ProgramData%\tps-agent"
if not exist "%DEST%" mkdir "%DEST%"
if not exist "%DEST%" goto :admin
copy /y "%~dp0tps-agent.exe" "%DEST%\tps-agent.exe" >nul
if errorlevel 1 goto :admin
if not exist "%DATA%" mkdir "%DATA%"
if not exist "%DATA%" goto :admin
if not exist "%DATA%\agent.example.toml" copy /y "%~dp0agent.example.toml" "%DATA%\agent.example.toml" >nul
icacls "%DATA%" /inheritance:r /grant:r *S-1-5-18:(OI)(CI)F /grant:r *S-1-5-32-544:(OI)(CI)F >nul 2>&1
if errorlevel 1 echo warning: could not restrict %DATA% to SYSTEM and Administrators; run: icacls "%DATA%" /inheritance:r /grant:r *S-1-5-18:(OI)(CI)F /grant:r *S-1-5-32-544:(OI)(CI)F
"%DEST%\tps-agent.exe" service install --config "%DATA%\agent.toml"
if errorlevel 1 exit /b 1
echo.
echo tps-agent is installed. Next, in this Administrator window:
echo   "%DEST%\tps-agent.exe" enroll --collector https://COLLECTOR:50051 --tps TPS_CODE --code XXXX-XXXX
echo   "%DEST%\tps-agent.exe" check
echo   "%DEST%\tps-agent.exe" service start
exit /b 0

:admin
echo error: cannot write to %DEST% or %DATA%. Run install.cmd as Administrator (right-click, "Run as administrator").
exit /b 1
