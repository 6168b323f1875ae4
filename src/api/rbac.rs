//! Roles → permissions: the one table that says who may do what.
//!
//! Routes name the permission they need (see [`super::routes`]); a key acts
//! with its user's role, and the role grants a fixed set of permissions.
//! README.md carries the same table; a test fails when the two disagree.

use crate::store::Role;

/// Declares [`Permission`] from one table: variant, name, roles holding it.
macro_rules! permissions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal: [$($role:ident),*];)+) => {
        /// One thing the API lets a caller do. Spelled `CALLS_READ` etc. in
        /// errors, docs and tests.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Permission { $($(#[$doc])* $variant),+ }

        impl Permission {
            /// Every permission, in table order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Permission::$variant => $name),+ }
            }

            /// The roles holding this permission.
            pub fn roles(self) -> &'static [Role] {
                match self { $(Permission::$variant => &[$(Role::$role),*]),+ }
            }
        }
    };
}

// Who holds what. Admin holds all. Supervisors run the floor: everything but
// what changes the tenant's setup or destroys evidence (settings, phone
// numbers, recording deletion). Agents work their calls: read, place, update
// and control calls, read captions and transcripts, keep customers and
// tickets current; no recordings, usage figures or settings.
permissions! {
    /// List and read calls with their logs and summary.
    CallsRead => "CALLS_READ": [Admin, Supervisor, Agent];
    /// Place outbound calls.
    CallsCreate => "CALLS_CREATE": [Admin, Supervisor, Agent];
    /// Change a call's record: disposition, notes, assigned agent, ticket.
    CallsUpdate => "CALLS_UPDATE": [Admin, Supervisor, Agent];
    /// Act on a live call: hold, mute, transfer, hang up, send media back.
    CallsControl => "CALLS_CONTROL": [Admin, Supervisor, Agent];
    /// Live captions, transcripts and their exports, transcription jobs.
    TranscriptsRead => "TRANSCRIPTS_READ": [Admin, Supervisor, Agent];
    /// Queue a batch re-transcription of a stored recording (uses quota).
    TranscriptionsCreate => "TRANSCRIPTIONS_CREATE": [Admin, Supervisor];
    /// Listen to and download recordings.
    RecordingsRead => "RECORDINGS_READ": [Admin, Supervisor];
    /// Delete recordings (compliance requests).
    RecordingsDelete => "RECORDINGS_DELETE": [Admin];
    /// See the tenant's phone numbers.
    PhoneNumbersRead => "PHONE_NUMBERS_READ": [Admin, Supervisor, Agent];
    /// Provision and release phone numbers (costs money).
    PhoneNumbersManage => "PHONE_NUMBERS_MANAGE": [Admin];
    /// See customers.
    CustomersRead => "CUSTOMERS_READ": [Admin, Supervisor, Agent];
    /// Create and edit customers.
    CustomersWrite => "CUSTOMERS_WRITE": [Admin, Supervisor, Agent];
    /// Delete customers.
    CustomersDelete => "CUSTOMERS_DELETE": [Admin, Supervisor];
    /// See tickets.
    TicketsRead => "TICKETS_READ": [Admin, Supervisor, Agent];
    /// Create and edit tickets, turn a call into a ticket.
    TicketsWrite => "TICKETS_WRITE": [Admin, Supervisor, Agent];
    /// Delete tickets.
    TicketsDelete => "TICKETS_DELETE": [Admin, Supervisor];
    /// Usage figures and quota consumption.
    UsageRead => "USAGE_READ": [Admin, Supervisor];
    /// See telephony settings and quotas.
    SettingsRead => "SETTINGS_READ": [Admin, Supervisor];
    /// Change telephony settings and quotas.
    SettingsManage => "SETTINGS_MANAGE": [Admin];
}

impl Permission {
    /// Whether `role` holds this permission.
    pub fn granted_to(self, role: Role) -> bool {
        self.roles().contains(&role)
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The grants as a Markdown table (the one in README.md).
pub fn markdown_table() -> String {
    let mut out = String::from("| permission | admin | supervisor | agent |\n|---|:-:|:-:|:-:|\n");
    for p in Permission::ALL {
        out.push_str(&format!("| `{p}` |"));
        for role in [Role::Admin, Role::Supervisor, Role::Agent] {
            out.push_str(if p.granted_to(role) {
                " ✓ |"
            } else {
                " — |"
            });
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Permission::*;
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_roles_nest() {
        let names: HashSet<_> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(names.len(), Permission::ALL.len());
        // Admin holds everything; whatever an agent may do, a supervisor may.
        for &p in Permission::ALL {
            assert!(p.granted_to(Role::Admin), "{p}");
            if p.granted_to(Role::Agent) {
                assert!(p.granted_to(Role::Supervisor), "{p}");
            }
        }
        let denied_to_supervisor: Vec<_> = Permission::ALL
            .iter()
            .copied()
            .filter(|p| !p.granted_to(Role::Supervisor))
            .collect();
        assert_eq!(
            denied_to_supervisor,
            [RecordingsDelete, PhoneNumbersManage, SettingsManage]
        );
        for p in [CallsRead, CallsUpdate, CallsControl, TranscriptsRead] {
            assert!(p.granted_to(Role::Agent), "{p}");
        }
        for p in [RecordingsRead, UsageRead, SettingsRead, PhoneNumbersManage] {
            assert!(!p.granted_to(Role::Agent), "{p}");
        }
    }

    #[test]
    fn readme_shows_the_same_table() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README.md's permission table differs from api::rbac; it should read:\n{}",
            markdown_table()
        );
    }
}
