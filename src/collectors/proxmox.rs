//! Proxmox VE collector. Owned by the Proxmox collector issue.
