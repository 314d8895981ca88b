//! The tag-taking APIs, from data/pool_apis.tsv (compiled in by build.rs).

/// What a tag-taking API does with the tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Alloc,
    Free,
    Lookaside,
    Reference,
    Other,
    /// An allocator without a tag argument: the kernel files its blocks under [`UNTAGGED`].
    Untagged,
}

/// Where the tag is at a call on 32-bit x86.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum X86TagPlace {
    /// The N-th dword above the return address (1-based).
    Stack(u8),
    /// The edx register (fastcall).
    Edx,
}

/// The argument that carries the tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagArgument {
    /// 1-based argument number on x64 and ARM64.
    pub number: u8,
    pub x86: X86TagPlace,
}

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolApi {
    pub name: &'static str,
    pub module: &'static str,
    pub role: Role,
    /// `None` for an untagged allocator.
    pub tag: Option<TagArgument>,
}

/// The tag PoolMon shows for blocks from an untagged allocator (`None`, as a value).
pub const UNTAGGED: u32 = u32::from_le_bytes(*b"None");

include!(concat!(env!("OUT_DIR"), "/pool_apis.rs"));

/// The tag-taking API imported (or exported) under `name`, whichever module exports it.
pub fn pool_api(name: &str) -> Option<&'static PoolApi> {
    POOL_APIS.iter().find(|api| api.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str) -> Option<TagArgument> {
        pool_api(name).unwrap().tag
    }

    #[test]
    fn the_table_holds_every_row_of_the_domain_table() {
        assert_eq!(POOL_APIS.len(), 42);
        let alloc = pool_api("ExAllocatePoolWithTag").unwrap();
        assert_eq!(
            (alloc.role, alloc.tag),
            (
                Role::Alloc,
                Some(TagArgument {
                    number: 3,
                    x86: X86TagPlace::Stack(3)
                })
            )
        );
        assert_eq!(tag("ExAllocatePool2").unwrap().x86, X86TagPlace::Stack(4));
        assert_eq!(tag("ExInitializeLookasideListEx").unwrap().number, 7);
        assert_eq!(
            tag("ObfReferenceObjectWithTag").unwrap().x86,
            X86TagPlace::Edx
        );
        assert_eq!(tag("ObOpenObjectByPointerWithTag").unwrap().number, 7);
        assert_eq!(
            pool_api("FltAllocatePoolAlignedWithTag").unwrap().module,
            "fltmgr.sys"
        );
        assert_eq!(
            pool_api("StorPortAllocatePool").unwrap().module,
            "storport.sys"
        );
    }

    #[test]
    fn untagged_allocators_have_no_tag_argument() {
        for name in ["ExAllocatePool", "ExAllocatePoolWithQuota"] {
            let api = pool_api(name).unwrap();
            assert_eq!((api.role, api.tag), (Role::Untagged, None), "{name}");
        }
        assert_eq!(UNTAGGED.to_le_bytes(), *b"None");
        assert_eq!(pool_api("ExFreePool"), None);
    }
}
