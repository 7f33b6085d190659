//! The examples each subcommand's `--help` ends with (`-h` stays short without them): the
//! commands an admin types first, with the flags they most often need.

pub const RUN: &str = "\
Examples:
  # Rehearse in-process, no tenant and no credentials
  autopilot-bulk run devices.csv --emulator
  # Check everything, send nothing; then run for real
  autopilot-bulk run devices.csv --group-id 5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e --dry-run
  autopilot-bulk run devices.csv --group-id 5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e
  # Continue an interrupted run where it stopped
  autopilot-bulk run devices.csv --resume";

pub const VALIDATE: &str = "\
Examples:
  autopilot-bulk validate devices.csv
  # A serial-only export: give the target the rows leave out
  autopilot-bulk validate AutopilotHWID.csv --group-id 5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e
  autopilot-bulk validate devices.csv --tenants tenants.toml";

pub const EMULATE: &str = "\
Examples:
  # A stand-in Graph on a fixed port, for runs from another terminal
  autopilot-bulk emulate --port 8080 --devices emulator-devices.txt
  # Rehearse a missing permission
  autopilot-bulk emulate --port 8080 --deny-permission
  # Rehearse throttling and faults
  autopilot-bulk emulate --port 8080 --limit 100/20s --fault-503 0.05";

pub const STATUS: &str = "\
Examples:
  autopilot-bulk status devices.results.csv
  # Read again every minute until every device is assigned (30 min at most)
  autopilot-bulk status devices.results.csv --watch
  autopilot-bulk status devices.results.csv --watch --interval 5m --timeout 2h";

pub const PREFLIGHT: &str = "\
Examples:
  # Permissions, one listing page, one GET on the route: no write
  autopilot-bulk preflight devices.csv
  autopilot-bulk preflight devices.csv --tenants tenants.toml
  # Before an import of hardware hashes
  autopilot-bulk preflight AutopilotHWID.csv --import";

pub const PROFILES: &str = "\
Examples:
  # Which profile does each group get?
  autopilot-bulk profiles
  autopilot-bulk profiles assign \"Kiosk profile\" --group \"Kiosk devices\"";

pub const PROFILES_ASSIGN: &str = "\
Examples:
  autopilot-bulk profiles assign \"Kiosk profile\" --group \"Kiosk devices\"
  autopilot-bulk profiles assign 7f1c2d3e-0000-4000-8000-000000000001 --group 5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e";

pub const UNDO: &str = "\
Examples:
  # What would be put back, row by row; nothing sent
  autopilot-bulk undo devices.results.csv --dry-run
  autopilot-bulk undo devices.results.csv
  autopilot-bulk undo devices.results.csv --resume";

pub const PLAN: &str = "\
Examples:
  autopilot-bulk plan devices.csv --group-id 5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e
  autopilot-bulk plan devices.csv --tenants tenants.toml -o tonight.plan.csv
  autopilot-bulk plan devices.csv --emulator";

pub const IMPORT: &str = "\
Examples:
  # Get-WindowsAutopilotInfo's export, registered, then assigned
  autopilot-bulk import AutopilotHWID.csv
  autopilot-bulk run AutopilotHWID.import.csv --group-id 5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e
  autopilot-bulk import AutopilotHWID.csv --resume";

#[cfg(test)]
mod tests {
    use clap::FromArgMatches;

    /// `line` split as a shell would: on spaces, double quotes kept together.
    fn words(line: &str) -> Vec<String> {
        let mut words = vec![String::new()];
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ' ' if !quoted => words.push(String::new()),
                c => words.last_mut().unwrap().push(c),
            }
        }
        words.retain(|w| !w.is_empty());
        words
    }

    #[test]
    fn every_example_parses_as_the_command_line_it_shows() {
        let all = [
            super::RUN,
            super::VALIDATE,
            super::EMULATE,
            super::STATUS,
            super::PREFLIGHT,
            super::PROFILES,
            super::PROFILES_ASSIGN,
            super::UNDO,
            super::PLAN,
            super::IMPORT,
        ];
        let mut seen = 0;
        for text in all {
            let commands: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("autopilot-bulk "))
                .collect();
            assert!((2..=4).contains(&commands.len()), "{text}");
            for line in commands {
                let parsed = crate::cli::command()
                    .try_get_matches_from(words(line))
                    .and_then(|m| crate::cli::Cli::from_arg_matches(&m));
                if let Err(e) = parsed {
                    panic!("{line}: {e}");
                }
                seen += 1;
            }
        }
        assert!(seen >= 20, "{seen} examples");
    }
}
