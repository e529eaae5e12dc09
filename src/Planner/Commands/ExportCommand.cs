using System.CommandLine;
using Planner.Cli.Export;
using Planner.CostModel.Specs;

namespace Planner.Cli.Commands;

/// <summary><c>export</c>: write a plan file as a Megatron-LM, DeepSpeed or torchtitan configuration.</summary>
public static class ExportCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create(TextWriter stdout)
    {
        var plan = new Option<string>("--plan") { Description = "Plan file (the plan object written by plan --out)", Required = true };
        var to = new Option<string>("--to") { Description = "Target: megatron (argument list), deepspeed (JSON config) or torchtitan (TOML job config)", Required = true }
            .AcceptOnlyFromAmong(Exporters.Targets);
        var outFile = new Option<string?>("--out") { Description = "Write the config to this file instead of stdout" };
        var force = new Option<bool>("--force") { Description = "Overwrite the --out file if it exists" };
        var cmd = new Command("export", "Write a plan as a Megatron-LM, DeepSpeed or torchtitan configuration") { plan, to, outFile, force };
        cmd.SetAction(r =>
        {
            string planPath = r.GetValue(plan)!;
            string? outPath = r.GetValue(outFile);
            if (outPath is not null)
            {
                if (outPath.Length == 0)
                    throw new InputException("--out: the file name is empty");
                if (Directory.Exists(outPath))
                    throw new InputException($"--out: '{outPath}' is a directory; give a file name");
                if (File.Exists(outPath) && !r.GetValue(force))
                    throw new InputException($"--out: '{outPath}' exists; pass --force to overwrite it");
                if (string.Equals(Path.GetFullPath(outPath), Path.GetFullPath(planPath), StringComparison.Ordinal))
                    throw new InputException($"--out: '{outPath}' is the --plan file itself");
            }
            string text = Exporters.Render(r.GetValue(to)!, ExportInput.Read(planPath));
            if (outPath is null)
            {
                stdout.Write(text);
                return Cli.Ok;
            }
            try
            {
                File.WriteAllText(outPath, text);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new InputException($"--out: cannot write '{outPath}': {e.Message.Split('\n')[0].Trim()}");
            }
            stdout.WriteLine($"{r.GetValue(to)} config written to {outPath}");
            return Cli.Ok;
        });
        return cmd;
    }
}
