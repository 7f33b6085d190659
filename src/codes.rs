//! The `error_code` values the tool writes itself (Graph's own codes are written verbatim),
//! in one place: users' scripts match on them, so each is spelled once.

/// A listing gave back a page it had already given: stopped instead of looping.
pub const PAGING_LOOP: &str = "PagingLoop";
/// No identity of the tenant holds the row's serial number.
pub const SERIAL_NOT_FOUND: &str = "SerialNotFound";
/// Several identities hold the row's serial number: none is guessed.
pub const AMBIGUOUS_SERIAL: &str = "AmbiguousSerial";
/// The device has no Entra device object, so it cannot join a group.
pub const DEVICE_NOT_IN_DIRECTORY: &str = "DeviceNotInDirectory";
/// The row's group is not a group of the tenant.
pub const GROUP_NOT_FOUND: &str = "GroupNotFound";
/// The row's group is dynamic: its members come from its rule.
pub const DYNAMIC_GROUP: &str = "DynamicGroup";
/// A read before the first write stopped (the tenant or the run stopped).
pub const STOPPED: &str = "Stopped";
/// A bug: a row reached a stage that is not its action's.
pub const INTERNAL: &str = "Internal";
/// `undo`: the results file's `assignment_id` cannot be an assignment id (never sent).
pub const INVALID_ASSIGNMENT_ID: &str = "InvalidAssignmentId";
/// `undo`: the device's group tag is no longer the one the run set: left as it is.
pub const RETAGGED: &str = "RetaggedSinceRun";
/// `undo`: the results file does not record what undoing the row needs.
pub const NOT_RECORDED: &str = "NotRecorded";
/// A stop because the results file or the journal could not be written (disk full, the
/// file-size limit): exit 2, what was written kept whole.
pub const UNWRITABLE: &str = "CannotWrite";
