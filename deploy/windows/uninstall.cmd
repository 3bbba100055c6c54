@echo off
rem tps-agent for Windows: removes the service and the program (run as Administrator).
rem The token and the spool in %ProgramData%\tps-agent stay; delete that folder by hand
rem when the laptop leaves its TPS.
setlocal
set "DEST=%ProgramFiles%\tps-agent"
"%DEST%\tps-agent.exe" service uninstall
del /q "%DEST%\tps-agent.exe"
rmdir "%DEST%"
exit /b 0
