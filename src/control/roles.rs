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
    /// The government app's back end, asking the resident tracker on a
    /// resident's behalf; it can pull nothing.
    ResidentPortal,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Puller,
        Role::Publisher,
        Role::Admin,
        Role::Auditor,
        Role::ResidentPortal,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Puller => "puller",
            Role::Publisher => "publisher",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::ResidentPortal => "resident-portal",
        }
    }
}

/// Which departments may hold the privileged roles (config
/// `admin_departments`, `auditor_departments`,
/// `resident_portal_departments`).
#[derive(Debug, Clone)]
pub struct RoleDepartments {
    pub admin: Vec<String>,
    pub auditor: Vec<String>,
    pub resident_portal: Vec<String>,
}

impl RoleDepartments {
    /// Whether a token of `department` may carry `role`. Pulling and
    /// publishing are bounded by grants and the catalog instead — except
    /// for a resident portal, which holds its own role and no other: a
    /// portal that could also pull would be a way round the tracker's
    /// narrow view.
    pub fn allows(&self, department: &str, role: Role) -> bool {
        let portal = self.resident_portal.iter().any(|d| d == department);
        match role {
            Role::ResidentPortal => portal,
            _ if portal => false,
            Role::Admin => self.admin.iter().any(|d| d == department),
            Role::Auditor => self.auditor.iter().any(|d| d == department),
            Role::Puller | Role::Publisher => true,
        }
    }

    /// Whether `department` is a resident portal.
    pub fn is_portal(&self, department: &str) -> bool {
        self.resident_portal.iter().any(|d| d == department)
    }
}
