//! The Windows service: registered with the Service Control Manager to start
//! automatically and restart on failure, running `tps-agent service-run --config …`,
//! which hands the process to the SCM and runs the agent's loop until told to stop.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use super::{Action, ServiceError};

const NAME: &str = "tps-agent";
const DISPLAY: &str = "TPS connectivity agent";

fn failed(what: &str, e: impl std::error::Error) -> ServiceError {
    // windows-service says "IO error in winapi call"; the OS error is its source.
    let text = match e.source() {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    };
    let hint = if text.contains("(os error 5)") {
        " Run the command prompt as Administrator."
    } else {
        ""
    };
    ServiceError::Failed(format!("{what}: {text}.{hint}"))
}

pub fn manage(action: Action, config: &Path) -> Result<String, ServiceError> {
    let access = match action {
        Action::Install => ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
        _ => ServiceManagerAccess::CONNECT,
    };
    let manager = ServiceManager::local_computer(None::<&str>, access)
        .map_err(|e| failed("cannot open the service manager", e))?;
    match action {
        Action::Install => {
            let exe =
                std::env::current_exe().map_err(|e| failed("cannot find tps-agent.exe", e))?;
            let info = ServiceInfo {
                name: OsString::from(NAME),
                display_name: OsString::from(DISPLAY),
                service_type: ServiceType::OWN_PROCESS,
                start_type: ServiceStartType::AutoStart,
                error_control: ServiceErrorControl::Normal,
                executable_path: exe,
                launch_arguments: vec![
                    OsString::from("service-run"),
                    OsString::from("--config"),
                    config.as_os_str().to_owned(),
                ],
                dependencies: vec![],
                account_name: None, // LocalSystem: may read the token, uses the ICMP API
                account_password: None,
            };
            let service = manager
                .create_service(
                    &info,
                    ServiceAccess::CHANGE_CONFIG
                        | ServiceAccess::START
                        | ServiceAccess::QUERY_STATUS,
                )
                .map_err(|e| failed("cannot install the service", e))?;
            let _ = service.set_description(
                "Measures this polling station's internet link and reports it to the election commission's collector.",
            );
            // Restart after 5 s, every time; the count resets after a day without failure.
            let restart = ServiceAction {
                action_type: ServiceActionType::Restart,
                delay: Duration::from_secs(5),
            };
            service
                .update_failure_actions(ServiceFailureActions {
                    reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
                    reboot_msg: None,
                    command: None,
                    actions: Some(vec![restart.clone(), restart.clone(), restart]),
                })
                .map_err(|e| failed("cannot set restart on failure", e))?;
            let _ = service.set_failure_actions_on_non_crash_failures(true);
            Ok(format!(
                "service {NAME} installed (starts with Windows, restarts on failure). Start it now: tps-agent service start"
            ))
        }
        Action::Uninstall => {
            let service = manager
                .open_service(
                    NAME,
                    ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
                )
                .map_err(|e| failed("cannot open the service", e))?;
            if service
                .query_status()
                .is_ok_and(|s| s.current_state != ServiceState::Stopped)
            {
                let _ = service.stop();
            }
            service
                .delete()
                .map_err(|e| failed("cannot remove the service", e))?;
            Ok(format!(
                "service {NAME} removed; the token and the spool stay in {}",
                config.parent().unwrap_or(config).display()
            ))
        }
        Action::Start => {
            let service = manager
                .open_service(NAME, ServiceAccess::START)
                .map_err(|e| {
                    failed(
                        "cannot open the service (is it installed? tps-agent service install)",
                        e,
                    )
                })?;
            service
                .start::<&str>(&[])
                .map_err(|e| failed("cannot start the service", e))?;
            Ok(format!("service {NAME} started"))
        }
        Action::Stop => {
            let service = manager
                .open_service(NAME, ServiceAccess::STOP)
                .map_err(|e| failed("cannot open the service", e))?;
            service
                .stop()
                .map_err(|e| failed("cannot stop the service", e))?;
            Ok(format!("service {NAME} stopping"))
        }
    }
}

/// The config the SCM-started process was given (`service-run --config …`).
static CONFIG: OnceLock<PathBuf> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

pub fn run(config: &Path) -> Result<(), ServiceError> {
    let _ = CONFIG.set(config.to_path_buf());
    service_dispatcher::start(NAME, ffi_service_main).map_err(|e| {
        failed(
            "not started by the service manager (use `tps-agent run` in a console)",
            e,
        )
    })
}

fn service_main(_args: Vec<OsString>) {
    if let Err(e) = serve() {
        tracing::error!("service stopped: {e}");
    }
}

fn serve() -> Result<(), String> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_tx = std::sync::Mutex::new(Some(stop_tx));
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            if let Some(tx) = stop_tx.lock().ok().and_then(|mut t| t.take()) {
                let _ = tx.send(());
            }
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let status = service_control_handler::register(NAME, handler).map_err(|e| e.to_string())?;
    let report = |state, accept| {
        status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code: ServiceExitCode::Win32(0),
            checkpoint: 0,
            wait_hint: Duration::from_secs(10),
            process_id: None,
        })
    };
    report(
        ServiceState::Running,
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
    )
    .map_err(|e| e.to_string())?;
    let path = CONFIG
        .get()
        .cloned()
        .unwrap_or_else(|| crate::platform::Device::Windows.config_path());
    let result = (|| -> Result<(), String> {
        let config = crate::config::load(&path).map_err(|e| e.to_string())?;
        let creds = crate::credentials::load(&config.state_dir).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(crate::run::run(config, creds, async {
            let _ = stop_rx.await;
        }))
        .map_err(|e| e.to_string())
    })();
    let code = if result.is_ok() { 0 } else { 1 };
    status
        .set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: ServiceState::Stopped,
            controls_accepted: ServiceControlAccept::empty(),
            exit_code: ServiceExitCode::Win32(code),
            checkpoint: 0,
            wait_hint: Duration::default(),
            process_id: None,
        })
        .map_err(|e| e.to_string())?;
    result
}
