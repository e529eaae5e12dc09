using System.CommandLine;
using System.Text.Json.Nodes;
using Planner.CostModel.Plans;
using Planner.CostModel.Specs;
using Planner.Executor.Training;

namespace Planner.Cli.Commands;

/// <summary>
/// The checkpoint flags of <c>run</c> (<c>--checkpoint-dir</c>, <c>--checkpoint-every</c>, <c>--keep-checkpoints</c>,
/// <c>--force</c>, <c>--resume</c>) and of its rank processes (the same three, <c>--resume</c> naming the checkpoint
/// folder the launcher resolved, or a directory whose latest complete checkpoint the rank takes, and the run's id):
/// their checks and what they give the ranks.
/// </summary>
internal sealed class CheckpointFlags
{
    public Option<string?> Directory { get; } = new("--checkpoint-dir") { Description = "Write sharded checkpoints here (docs/checkpoints.md)" };
    public Option<int> Every { get; } = new("--checkpoint-every") { Description = "A checkpoint every N steps (and at the end; 0: at the end only)", DefaultValueFactory = _ => 0 };
    public Option<int> Keep { get; } = new("--keep-checkpoints") { Description = "Complete checkpoints kept (the newest)", DefaultValueFactory = _ => 2 };
    public Option<bool> Force { get; } = new("--force") { Description = "Replace another run's checkpoints in --checkpoint-dir" };
    public Option<string?> Resume { get; } = new("--resume") { Description = "Continue from the latest complete checkpoint in DIR (its plan, model and data unless given)" };
    public Option<string?> RunId { get; } = new("--run-id") { Hidden = true };

    /// <summary>Optimizers whose state is element-wise and checkpointed (<see cref="Executor.Optim.ICheckpointedOptimizer"/>).</summary>
    private static readonly OptimizerKind[] Checkpointed = [OptimizerKind.AdamW, OptimizerKind.Sgd, OptimizerKind.Lion, OptimizerKind.Sophia];

    public void AddToRun(Command c)
    {
        foreach (Option o in new Option[] { Directory, Every, Keep, Force, Resume })
            c.Options.Add(o);
    }

    public void AddToRank(Command c)
    {
        foreach (Option o in new Option[] { Directory, Every, Keep, Resume, RunId })
            c.Options.Add(o);
    }

    /// <summary>The latest complete checkpoint of <c>--resume DIR</c> with its manifest, or null without the flag.</summary>
    public (string Folder, CheckpointManifest Manifest)? Resumed(ParseResult r)
    {
        if (r.GetValue(Resume) is not { } dir)
            return null;
        if (!System.IO.Directory.Exists(dir))
            throw new InputException($"--resume: directory '{dir}' not found");
        string folder = CheckpointFolders.Latest(dir)
            ?? throw new InputException($"--resume: '{dir}' holds no complete checkpoint (a step-N folder with its {CheckpointManifest.FileName})");
        try
        {
            return (folder, CheckpointManifest.Read(folder));
        }
        catch (InvalidDataException e)
        {
            throw new InputException($"--resume: {e.Message}");
        }
    }

    /// <summary>
    /// Checks the flags against the run (a plan resumed must train the checkpoint's model, batch and fine-tuning with
    /// an optimizer whose state is checkpointed), claims <c>--checkpoint-dir</c> for the run (refusing another run's
    /// unless <c>--force</c>) and returns the run's id (the resumed run's, or a new one). Only the launcher of rank 0
    /// (<paramref name="claims"/>) claims the directory: its rank 0 writes the manifests, and the other machines'
    /// launchers of one run may share its file system.
    /// </summary>
    public string Prepare(ParseResult r, RunCommand.RunInputs inputs, (string Folder, CheckpointManifest Manifest)? resumed, bool claims)
    {
        string? dir = r.GetValue(Directory);
        if (r.GetValue(Every) < 0)
            throw new InputException($"--checkpoint-every: {r.GetValue(Every)} must be at least 0 (0: a checkpoint at the end only)");
        if (r.GetValue(Keep) < 1)
            throw new InputException($"--keep-checkpoints: {r.GetValue(Keep)} must be at least 1");
        if (dir is null && (r.GetResult(Every) is { Implicit: false } || r.GetResult(Keep) is { Implicit: false } || r.GetValue(Force)))
            throw new InputException("--checkpoint-every, --keep-checkpoints and --force need --checkpoint-dir");
        var optimizer = inputs.Plan.Tuning.Optimizer;
        if ((dir is not null || resumed is not null) && !Checkpointed.Contains(optimizer))
            throw new InputException($"{inputs.PlanPath}: key 'optimizer' is {FineTuning.Name(optimizer)}, whose state (not element-wise) is not checkpointed; "
                + $"checkpoints hold {string.Join(", ", Checkpointed.Select(FineTuning.Name))}: run without --checkpoint-dir and --resume, or with one of those");
        if (resumed is { } x)
            Compatible(x.Folder, inputs);
        string runId = resumed?.Manifest.RunId ?? Guid.NewGuid().ToString("N");
        if (dir is not null && claims)
            Claim(dir, runId, r.GetValue(Force));
        return runId;
    }

    /// <summary>Refuses a plan that trains another model, batch or fine-tuning than the checkpoint's.</summary>
    private static void Compatible(string folder, RunCommand.RunInputs inputs)
    {
        string copy = Path.Combine(folder, CheckpointManifest.PlanCopy);
        var (saved, savedModel, _) = PlanFile.Read(copy);
        var model = ModelLoader.Load(savedModel);
        var plan = inputs.Plan;
        if (model.TotalParams != inputs.Model.TotalParams || model.Layers != inputs.Model.Layers || model.Hidden != inputs.Model.Hidden)
            throw new InputException($"{inputs.PlanPath}: key 'model': '{inputs.Model.Name}' is not the checkpoint's model '{model.Name}' ({copy})");
        foreach (var (key, mine, theirs) in new (string, object, object)[]
        {
            ("gbs", plan.Gbs, saved.Gbs), ("seq", plan.Seq, saved.Seq), ("finetune", plan.Tuning.Method, saved.Tuning.Method),
            ("lora_rank", plan.Tuning.Rank, saved.Tuning.Rank), ("lora_targets", plan.Tuning.Targets, saved.Tuning.Targets), ("optimizer", plan.Tuning.Optimizer, saved.Tuning.Optimizer),
            ("precision", plan.Precision, saved.Precision),
        })
            if (!Equals(mine, theirs))
                throw new InputException($"{inputs.PlanPath}: key '{key}' is {mine}; the checkpoint trained with {theirs} ({copy}): a resume changes the layout only");
    }

    /// <summary>Makes <paramref name="dir"/> the checkpoint directory of run <paramref name="runId"/>: refused when it
    /// holds another run's checkpoints or other files, unless <paramref name="force"/> (which removes the checkpoints).</summary>
    private static void Claim(string dir, string runId, bool force)
    {
        if (File.Exists(dir))
            throw new InputException($"--checkpoint-dir: '{dir}' is a file, not a directory");
        bool used = System.IO.Directory.Exists(dir) && System.IO.Directory.EnumerateFileSystemEntries(dir).Any();
        if (used && CheckpointFolders.RunId(dir) != runId)
        {
            if (!force)
                throw new InputException($"--checkpoint-dir: '{dir}' holds another run's checkpoints or other files; pass --force to replace its checkpoints, or --resume {dir} to continue its run");
            CheckpointFolders.Clear(dir);
        }
        CheckpointFolders.Claim(dir, runId);
    }

    /// <summary>The flags that give the rank processes the checkpoints to write and the one to resume from.</summary>
    public IEnumerable<string> Forwarded(ParseResult r, string runId, (string Folder, CheckpointManifest Manifest)? resumed)
    {
        if (r.GetValue(Directory) is { } dir)
            foreach (var a in new[] { "--checkpoint-dir", Path.GetFullPath(dir), "--checkpoint-every", r.GetValue(Every).ToString(), "--keep-checkpoints", r.GetValue(Keep).ToString() })
                yield return a;
        if (resumed is { } x)
            foreach (var a in new[] { "--resume", Path.GetFullPath(x.Folder) })
                yield return a;
        yield return "--run-id";
        yield return runId;
    }

    /// <summary>A rank's checkpoint options (null when it neither writes nor resumes) and the plan text checkpoints copy.</summary>
    public CheckpointOptions? Options(ParseResult r, RunArguments args, string model)
    {
        if (r.GetValue(Directory) is null && r.GetValue(Resume) is null)
            return null;
        // The launcher names the checkpoint folder it resolved; a rank restarted with --resume DIR takes DIR's latest.
        string? from = r.GetValue(Resume) is { } dir
            ? File.Exists(Path.Combine(dir, CheckpointManifest.FileName)) ? dir
                : CheckpointFolders.Latest(dir) ?? throw new InputException($"--resume: '{dir}' holds no complete checkpoint")
            : null;
        string absoluteModel = File.Exists(model) ? Path.GetFullPath(model) : model;
        var run = new CheckpointManifest(CheckpointManifest.CurrentFormat, r.GetValue(RunId) ?? Guid.NewGuid().ToString("N"), 0, Path.GetFullPath(args.Plan), absoluteModel,
            args.Data is { } d ? Path.GetFullPath(d) : null, args.DataBytes, args.Seed, args.Lr, args.AdamEps, args.LossScale);
        return new CheckpointOptions(r.GetValue(Directory), r.GetValue(Every), r.GetValue(Keep), from, run);
    }

    /// <summary>The plan file's text with its model as an absolute path when it names a file (what a checkpoint copies).</summary>
    public static string PlanText(string planPath, string model)
    {
        var node = JsonNode.Parse(File.ReadAllText(planPath))!.AsObject();
        if (File.Exists(model))
            node["model"] = Path.GetFullPath(model);
        return node.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
    }
}
