//! The tag-taking APIs, from data/pool_apis.tsv (compiled in by build.rs).

/// What a tag-taking API does with the tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Alloc,
    Free,
    Lookaside,
    Reference,
    Other,
}

/// Where the tag is at a call on 32-bit x86.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum X86TagPlace {
    /// The N-th dword above the return address (1-based).
    Stack(u8),
    /// The edx register (fastcall).
    Edx,
}

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolApi {
    pub name: &'static str,
    pub module: &'static str,
    /// 1-based argument number of the tag on x64 and ARM64.
    pub tag_arg: u8,
    pub role: Role,
    pub x86_tag: X86TagPlace,
}

include!(concat!(env!("OUT_DIR"), "/pool_apis.rs"));

/// The tag-taking API imported under `name`, whichever module exports it.
pub fn pool_api(name: &str) -> Option<&'static PoolApi> {
    POOL_APIS.iter().find(|api| api.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_every_row_of_the_domain_table() {
        assert_eq!(POOL_APIS.len(), 22);
        let alloc = pool_api("ExAllocatePoolWithTag").unwrap();
        assert_eq!(
            (alloc.tag_arg, alloc.role, alloc.x86_tag),
            (3, Role::Alloc, X86TagPlace::Stack(3))
        );
        assert_eq!(
            pool_api("ExAllocatePool2").unwrap().x86_tag,
            X86TagPlace::Stack(4)
        );
        assert_eq!(pool_api("ExInitializeLookasideListEx").unwrap().tag_arg, 7);
        assert_eq!(
            pool_api("ObfReferenceObjectWithTag").unwrap().x86_tag,
            X86TagPlace::Edx
        );
        assert_eq!(
            pool_api("FltAllocatePoolAlignedWithTag").unwrap().module,
            "fltmgr.sys"
        );
        assert_eq!(pool_api("ExAllocatePool"), None);
    }
}
