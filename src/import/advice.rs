//! What to do about the import errors that stop real migrations: one line per known error,
//! written beside Graph's code and name in the import file.

/// The tool's own error codes for import rows (Graph's are numbers).
pub const TIMED_OUT: &str = "ImportTimedOut";
pub const NOT_LISTED: &str = "NotListedYet";
pub const REFUSED: &str = "ImportRefused";
pub const UNKNOWN: &str = "ImportOutcomeUnknown";
pub const UNREADABLE: &str = "ImportUnreadable";

/// Advice for Graph's `deviceErrorCode` / `deviceErrorName`.
pub fn for_error(code: i64, name: &str) -> String {
    let advice = match (code, name) {
        (806, _) | (_, "ZtdDeviceAlreadyAssigned") => {
            "the device is already registered with Autopilot (in this tenant, or imported \
             twice): find it under Windows Autopilot devices; delete a stale registration there \
             first if it must be imported again"
        }
        (808, _) | (_, "ZtdDeviceAssignedToOtherTenant") => {
            "the device is registered in another tenant: have it deregistered there (that \
             tenant's admin, or the reseller or OEM that registered it), then `import --resume`"
        }
        (802, _) | (_, "InvalidZtdHardwareHash") => {
            "the hardware hash is not valid: collect it again on the device \
             (Get-WindowsAutopilotInfo), then `import --resume` with the new file"
        }
        _ => "the Autopilot service refused the device; Intune's portal shows the import error",
    };
    let name = if name.is_empty() { "error" } else { name };
    format!("{name} ({code}): {advice}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errors_that_stop_migrations_say_what_to_do() {
        assert!(for_error(808, "ZtdDeviceAssignedToOtherTenant").contains("deregistered there"));
        assert!(for_error(806, "").contains("already registered"));
        assert!(for_error(802, "InvalidZtdHardwareHash").contains("collect it again"));
        assert!(for_error(999, "Other").starts_with("Other (999)"));
    }
}
