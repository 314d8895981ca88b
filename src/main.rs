//! The `pooltag` binary: parse the command line, run one mode, map the outcome to grep's exit
//! codes (0 found, 1 not found, 2 error). A closed standard output ends the run quietly.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use pooltag::annotate;
use pooltag::cli::{Args, Command, ExportConfig};
use pooltag::error::{Error, Result};
use pooltag::export;
use pooltag::extract::Evidence;
use pooltag::index::{self, IndexConfig};
use pooltag::merge::{self, MergeConfig};
use pooltag::pool::{self, PoolConfig};
use pooltag::print;
use pooltag::query::{self, QueryConfig, QueryOutput, Scope, TagsConfig};
use pooltag::store::{self, Database, file_name};
use pooltag::text::escape;

/// Whether a mode found what it was asked for.
enum Found {
    Yes,
    No,
}

fn main() -> ExitCode {
    print::set_colour(print::colour_wanted());
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => return usage_error(e),
    };
    let outcome = args.into_command().and_then(|command| match command {
        Command::Index(config) => run_index(&config),
        Command::Query(config) => run_query(&config),
        Command::Tags(config) => run_tags(&config),
        Command::Info { db, json } => run_info(&db, json),
        Command::Check { db, json, drivers } => run_check(&db, json, &drivers),
        Command::Annotate { db, json, inputs } => run_annotate(&db, json, &inputs),
        Command::Merge(config) => run_merge(&config),
        Command::Completions(shell) => run_completions(shell),
        Command::Man => run_man(),
        Command::Export(config) => run_export(&config),
        Command::Pool(config) => run_pool(&config),
    });
    match outcome {
        Ok(Found::Yes) => ExitCode::SUCCESS,
        Ok(Found::No) => ExitCode::from(1),
        Err(Error::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pooltag: {e}");
            ExitCode::from(2)
        }
    }
}

/// A command line clap refused: one line on stderr and exit 2 (help and version print as
/// usual). Missing arguments are the exception: the line ends in a colon, so the names of the
/// missing arguments and the usage line that follow it are printed too.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let text = e.to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        ErrorKind::MissingRequiredArgument => {
            let shown: Vec<&str> = text
                .lines()
                .take_while(|line| !line.starts_with("For more information"))
                .collect();
            eprintln!("pooltag: {}", shown.join("\n").trim_end());
        }
        _ => eprintln!("pooltag: {}", text.lines().next().unwrap_or_default()),
    }
    ExitCode::from(2)
}

/// `pooltag index`: build the database, print the summary line on stderr.
fn run_index(config: &IndexConfig) -> Result<Found> {
    let summary = index::run(config)?;
    if summary.database_unchanged {
        eprintln!(
            "pooltag: {summary}; database {} left as it was (nothing changed; the run is \
             recorded in {})",
            config.db.display(),
            store::unchanged::log_path(&config.db).display()
        );
    } else {
        eprintln!("pooltag: {summary}; database {}", config.db.display());
    }
    Ok(Found::Yes)
}

/// `pooltag query`: the Pooltag.txt entries and driver files for the patterns.
fn run_query(config: &QueryConfig) -> Result<Found> {
    let db = Database::open(&config.db)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let found = match config.output {
        QueryOutput::List => {
            let scope = Scope::from_option(config.evidence, Scope::Bytes);
            let paths = query::list_files(&db, &config.patterns, config.ignore_case, scope)?;
            print::paths(&mut out, &paths)?;
            !paths.is_empty()
        }
        QueryOutput::Json => {
            let scope = Scope::from_option(config.evidence, Scope::AtLeast(Evidence::Bytes));
            let entries =
                query::find_entries(&db.tag_entries()?, &config.patterns, config.ignore_case);
            let mut array = print::JsonArray::begin(&mut out)?;
            for entry in &entries {
                array.entry(entry)?;
            }
            query::each_file(&db, &config.patterns, config.ignore_case, scope, |found| {
                Ok(array.file(found)?)
            })?;
            array.end()? > 0
        }
        QueryOutput::Human => {
            let scope = Scope::from_option(config.evidence, Scope::AtLeast(Evidence::Bytes));
            let list_bytes = config.evidence == Some(Evidence::Bytes);
            let mut answer = query::answer(&db, &config.patterns, config.ignore_case)?;
            print::entries_human_section(&mut out, &answer)?;
            let mut drivers = 0usize;
            query::each_shown(
                &db,
                &config.patterns,
                config.ignore_case,
                scope,
                list_bytes,
                |line| {
                    print::shown_human(&mut out, line, drivers == 0, answer.several_hosts)?;
                    drivers += 1;
                    Ok(())
                },
            )?;
            if drivers == 0 {
                query::explain_none(
                    &db,
                    &mut answer,
                    &config.patterns,
                    config.ignore_case,
                    scope,
                )?;
                print::no_driver_human(&mut out, &answer, &config.patterns, config.evidence)?;
            }
            !answer.entries.is_empty() || drivers > 0
        }
    };
    out.flush()?;
    Ok(if found { Found::Yes } else { Found::No })
}

/// `pooltag tags`: every tag of the named indexed files. A file not in the index is reported and
/// makes the exit status 1; the others are still printed.
fn run_tags(config: &TagsConfig) -> Result<Found> {
    let db = Database::open(&config.db)?;
    if config.collisions {
        return run_tag_collisions(&db, config);
    }
    let mut files = Vec::new();
    let mut missing = false;
    for given in &config.files {
        match query::resolve_file(&db, given)? {
            Some(file) => {
                let minimum = config.evidence.unwrap_or(Evidence::Bytes);
                let tags = query::file_tags(&db, file.content_id, minimum)?;
                files.push((file, tags));
            }
            None => {
                eprintln!("pooltag: {given}: not in the index");
                missing = true;
            }
        }
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    if config.json {
        print::tags_json(&mut out, &files)?;
    } else {
        let several_hosts = db.host_count()? > 1;
        for (file, tags) in &files {
            let list_bytes = config.evidence == Some(Evidence::Bytes);
            print::tags_human(&mut out, file, tags, several_hosts, list_bytes)?;
        }
    }
    out.flush()?;
    Ok(if missing { Found::No } else { Found::Yes })
}

/// `pooltag info`: what the database holds, after a full integrity check.
fn run_info(db: &std::path::Path, json: bool) -> Result<Found> {
    let database = Database::open(db)?;
    let integrity = match database.quick_check() {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.to_string(),
    };
    let info = database.info()?;
    for problem in &info.unchanged_runs.problems {
        eprintln!("pooltag: {}; ignored", escape(problem));
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    if json {
        print::info_json(&mut out, &info, &integrity)?;
    } else {
        print::info_human(&mut out, &info, &integrity)?;
    }
    out.flush()?;
    Ok(Found::Yes)
}

/// `pooltag merge`: combine databases; one summary line on stderr.
fn run_merge(config: &MergeConfig) -> Result<Found> {
    let summary = merge::run(config)?;
    eprintln!(
        "pooltag: merged {} databases, hosts {}, {} distinct tags, {:.2} s; database {}",
        summary.inputs,
        summary.hosts.join(", "),
        summary.distinct_tags,
        summary.elapsed.as_secs_f64(),
        config.db.display()
    );
    Ok(Found::Yes)
}

/// `pooltag export`: to standard output or a file; tags the format cannot carry are named on
/// stderr.
fn run_export(config: &ExportConfig) -> Result<Found> {
    let db = Database::open(&config.db)?;
    let summary = match &config.output {
        None => {
            let mut out = io::BufWriter::new(io::stdout().lock());
            let summary = export::export(&db, config.format, config.evidence, &mut out)?;
            out.flush()?;
            summary
        }
        Some(path) => {
            let shown = path.display();
            let file = std::fs::File::create(path)
                .map_err(|e| Error::new(format!("cannot write {shown}: {e}")))?;
            let mut out = io::BufWriter::new(file);
            let summary = export::export(&db, config.format, config.evidence, &mut out)?;
            out.flush()
                .map_err(|e| Error::new(format!("cannot write {shown}: {e}")))?;
            summary
        }
    };
    if !summary.unwritable.is_empty() {
        let tags: Vec<String> = summary
            .unwritable
            .iter()
            .map(|t| format!("'{t}'"))
            .collect();
        eprintln!(
            "pooltag: left out {} tags the tag-file format cannot carry: {}",
            tags.len(),
            tags.join(" ")
        );
    }
    Ok(if summary.lines > 0 {
        Found::Yes
    } else {
        Found::No
    })
}

/// `pooltag annotate`: each input (a file, or `-` and no input for standard input) annotated on
/// its own; found when any tag has an answer. An unreadable input is an error before any output.
fn run_annotate(db: &std::path::Path, json: bool, inputs: &[std::path::PathBuf]) -> Result<Found> {
    use std::io::Read;
    let database = Database::open(db)?;
    let stdin_only = [std::path::PathBuf::from("-")];
    let names = if inputs.is_empty() {
        &stdin_only[..]
    } else {
        inputs
    };
    let mut read = Vec::with_capacity(names.len());
    for input in names {
        let name = input.display().to_string();
        let bytes = if name == "-" {
            let mut bytes = Vec::new();
            io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| Error::new(format!("standard input: {e}")))?;
            bytes
        } else {
            std::fs::read(input).map_err(|e| Error::new(format!("{name}: {e}")))?
        };
        read.push(annotate::read_input(&name, &bytes));
    }
    let answers = annotate::answers(&database, &read)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if json {
        print::annotate_json(&mut out, &read, &answers)?;
    } else {
        print::annotate_human(&mut out, &read, &answers)?;
    }
    out.flush()?;
    let answered = answers
        .values()
        .any(|a| !a.drivers.is_empty() || !a.entries.is_empty());
    Ok(if answered { Found::Yes } else { Found::No })
}

/// `pooltag pool`: the live table, watched or saved, or the diff of two snapshots; found when a
/// row was printed or saved.
fn run_pool(config: &PoolConfig) -> Result<Found> {
    Ok(if pool::run(config)? {
        Found::Yes
    } else {
        Found::No
    })
}

/// `pooltag tags --collisions`: each `call`/`arg` tag of the files with its other users.
fn run_tag_collisions(db: &Database, config: &TagsConfig) -> Result<Found> {
    let entries = db.tag_entries()?;
    let mut drivers = Vec::new();
    let mut missing = false;
    for given in &config.files {
        let Some(file) = query::resolve_file(db, given)? else {
            eprintln!("pooltag: {given}: not in the index");
            missing = true;
            continue;
        };
        let name = file_name(&file.path).to_owned();
        let mut tags = Vec::new();
        for tag in query::file_tags(db, file.content_id, Evidence::Arg)? {
            let collision = query::collisions(db, &entries, tag.tag, &name, Some(file.content_id))?;
            tags.push((tag, collision));
        }
        drivers.push((file.path, tags));
    }
    print_collisions(db, &drivers, config.json)?;
    Ok(if missing { Found::No } else { Found::Yes })
}

/// `pooltag check`: drivers not in the index, analysed in memory, against the index. Found (exit
/// 0) means no collision; a collision exits 1.
fn run_check(db: &std::path::Path, json: bool, paths: &[std::path::PathBuf]) -> Result<Found> {
    use sha2::Digest;
    let database = Database::open(db)?;
    let entries = database.tag_entries()?;
    let mut drivers = Vec::new();
    let mut failed = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        let data = match pooltag::read::read_capped(path, pooltag::read::MAX_DRIVER_SIZE) {
            Ok(data) => data,
            Err(e) => {
                failed.push(format!("{shown}: {e}"));
                continue;
            }
        };
        if pooltag::read::summarize_pe(data.as_slice(), true).is_err() {
            failed.push(format!("{shown}: not a PE image"));
            continue;
        }
        let sha256: [u8; 32] = sha2::Sha256::digest(&data).into();
        let own = database.content_with_sha256(&sha256)?;
        let findings = pooltag::extract::analyse(&data);
        let name = file_name(&shown).to_owned();
        let mut tags: Vec<_> = findings
            .levels
            .iter()
            .filter(|(_, level)| **level >= Evidence::Arg)
            .map(|(tag, level)| query::FileTag {
                tag: *tag,
                evidence: *level,
                sites: findings
                    .sites
                    .iter()
                    .filter(|s| s.tag == *tag && s.evidence == *level)
                    .map(|site| pooltag::store::StoredSite::of(site, &findings))
                    .collect(),
            })
            .collect();
        tags.sort_by_key(|t| t.tag);
        let mut checked = Vec::new();
        for tag in tags {
            let collision = query::collisions(&database, &entries, tag.tag, &name, own)?;
            checked.push((tag, collision));
        }
        drivers.push((shown, checked));
    }
    print_collisions(&database, &drivers, json)?;
    if !failed.is_empty() {
        return Err(Error::new(failed.join("\npooltag: ")));
    }
    let collide = drivers
        .iter()
        .any(|(_, tags)| tags.iter().any(|(_, c)| !c.is_empty()));
    Ok(if collide { Found::No } else { Found::Yes })
}

fn print_collisions(
    db: &Database,
    drivers: &[(String, Vec<(query::FileTag, query::Collision)>)],
    json: bool,
) -> Result<()> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    if json {
        print::collisions_json(&mut out, drivers)?;
    } else {
        let several_hosts = db.host_count()? > 1;
        for (path, tags) in drivers {
            print::collisions_human(&mut out, path, tags, several_hosts)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `pooltag completions SHELL`.
fn run_completions(shell: clap_complete::Shell) -> Result<Found> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    clap_complete::generate(shell, &mut Args::command(), "pooltag", &mut out);
    out.flush()?;
    Ok(Found::Yes)
}

/// `pooltag man`: the manual page in roff.
fn run_man() -> Result<Found> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    clap_mangen::Man::new(Args::command()).render(&mut out)?;
    out.flush()?;
    Ok(Found::Yes)
}
