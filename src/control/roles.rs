//! Roles a token may carry, and which departments may hold the privileged
//! ones. Roles are granted, so they are a control-plane word: the auth
//! layer reads them from here.

/// What a principal may do, as its token names it (design README, "Roles").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Puller,
    Publisher,
    Admin,
    Auditor,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "puller" => Some(Role::Puller),
            "publisher" => Some(Role::Publisher),
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Puller => "puller",
            Role::Publisher => "publisher",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
}

/// Which departments may hold the privileged roles (config
/// `admin_departments`, `auditor_departments`).
#[derive(Debug, Clone)]
pub struct RoleDepartments {
    pub admin: Vec<String>,
    pub auditor: Vec<String>,
}

impl RoleDepartments {
    /// Whether a token of `department` may carry `role`. Pulling and
    /// publishing are bounded by grants and the catalog instead.
    pub fn allows(&self, department: &str, role: Role) -> bool {
        match role {
            Role::Admin => self.admin.iter().any(|d| d == department),
            Role::Auditor => self.auditor.iter().any(|d| d == department),
            Role::Puller | Role::Publisher => true,
        }
    }
}
