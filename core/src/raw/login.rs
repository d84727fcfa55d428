//! [`Login`]: a user and password, from a URL's user info or a builder, whose password
//! no `Debug` output shows.

use std::fmt;

/// A user name and its password. `Debug` shows the user and `***`, so that a
/// configuration holding one derives `Debug` without ever printing the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    user: String,
    password: String,
}

impl Login {
    /// The login of `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The user and the password, for building a client (never print them).
    pub fn parts(&self) -> (&str, &str) {
        (&self.user, &self.password)
    }
}

/// Shows `***` for the password.
impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Login;

    #[test]
    fn debug_shows_the_user_never_the_password() {
        let shown = format!("{:?}", Login::new("app", "hunter2"));
        assert!(shown.contains("app") && shown.contains("***"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
